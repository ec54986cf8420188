import { z } from "zod";

/** Longer URLs are refused: the record keeps it, and no receiver needs more. */
const MAX_CALLBACK_URL_LENGTH = 2048;

/**
 * Where a task's record is POSTed when it ends: an absolute http or https URL without credentials
 * (fetch refuses them, and the record would show them to whoever reads the task). Kept as given,
 * once checked.
 */
export const CallbackUrlSchema = z
  .string()
  .max(MAX_CALLBACK_URL_LENGTH, `is longer than ${MAX_CALLBACK_URL_LENGTH} characters`)
  .superRefine((raw, ctx) => {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      ctx.addIssue({ code: "custom", message: "is not an absolute URL (expected http://host/path or https://host/path)" });
      return;
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      ctx.addIssue({ code: "custom", message: `must be an http or https URL, not ${url.protocol}` });
    } else if (url.username !== "" || url.password !== "") {
      ctx.addIssue({ code: "custom", message: "must not hold credentials (user:password@): check the signature header instead" });
    }
  });
