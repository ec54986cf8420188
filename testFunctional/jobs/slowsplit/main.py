import json, os, subprocess, sys

req = json.loads(sys.stdin.readline())
out = req["outputDir"]
mode = req["mode"]
if mode == "split":
    lines = [l for l in open(req["input"]).read().split("\n") if l]
    children = []
    for i, line in enumerate(lines):
        name = f"part-{i}.txt"
        with open(os.path.join(out, name), "w") as f:
            f.write(line)
        children.append({"input": name})
    print(json.dumps({"children": children}))
elif mode == "child":
    line = open(req["input"]).read()
    if line == "fail":
        print("splitfail: this child fails on purpose", file=sys.stderr)
        sys.exit(1)
    subprocess.run(["sleep", str(req["params"].get("sleep", 30))], check=True)
    with open(os.path.join(out, "o.txt"), "w") as f:
        f.write(line)
    print(json.dumps({"output": "o.txt"}))
else:
    with open(os.path.join(out, "merged.txt"), "w") as f:
        f.write("\n".join(open(p).read() for p in req["inputs"]))
    print(json.dumps({"output": "merged.txt"}))
