import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { tempDir } from "./helpers.js";

const run = promisify(execFile);

export interface TlsFiles {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/** A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate, made with openssl. */
export async function makeCertificates(): Promise<TlsFiles> {
  const dir = await tempDir("tls");
  const f = (name: string) => path.join(dir, name);
  const openssl = (...args: string[]) => run("openssl", args, { cwd: dir });
  await openssl(
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "2",
    "-subj",
    "/CN=docq test CA",
    "-keyout",
    f("ca-key.pem"),
    "-out",
    f("ca.pem"),
  );
  for (const who of ["server", "client"]) {
    await openssl(
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-subj",
      `/CN=docq ${who}`,
      "-keyout",
      f(`${who}-key.pem`),
      "-out",
      f(`${who}.csr`),
    );
    const ext = f(`${who}.ext`);
    const { writeFile } = await import("node:fs/promises");
    await writeFile(
      ext,
      who === "server" ? "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n" : "extendedKeyUsage=clientAuth\n",
    );
    await openssl(
      "x509",
      "-req",
      "-in",
      f(`${who}.csr`),
      "-CA",
      f("ca.pem"),
      "-CAkey",
      f("ca-key.pem"),
      "-CAcreateserial",
      "-days",
      "2",
      "-extfile",
      ext,
      "-out",
      f(`${who}.pem`),
    );
  }
  return {
    ca: f("ca.pem"),
    serverCert: f("server.pem"),
    serverKey: f("server-key.pem"),
    clientCert: f("client.pem"),
    clientKey: f("client-key.pem"),
  };
}
