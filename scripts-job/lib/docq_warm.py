"""docq_warm: turn a Python function into a docq job, warm or one-shot.

    import sys, os
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
    from docq_warm import serve

    def handle(req):              # req: the request as a dict (mode, input|inputs, outputDir, params, task)
        ...                       # write the result under req["outputDir"]
        return "result.json"      # or {"output": "result.json"} or {"children": [{"input": "part-1"}, ...]}

    serve(handle)

With `warm: true` in job.yaml docq starts the script once per worker slot and sends one JSON
request per line on stdin, each with a "requestId"; serve() calls handle() for each one and
prints the answer, with the same requestId, as one JSON line on stdout. Everything before
serve() (imports, models, connections) is loaded once per process, not once per task.

Without `warm: true` the same script is a one-shot job: one request without requestId, then
end of input; serve() answers it and returns (an exception then means exit code 1).

While handle() runs, sys.stdout is stderr: print() cannot corrupt the protocol, and what it
prints is kept in the task's stderr tail. An exception fails only its task (the answer is
{"requestId": ..., "error": "..."}, the traceback goes to stderr); the process stays up.
"""

import json
import sys
import traceback

__all__ = ["serve"]


def serve(handle):
    """Answers requests from stdin with handle(request) until stdin ends."""
    stdin = sys.stdin.buffer
    out = sys.stdout
    sys.stdout = sys.stderr
    failed = False
    try:
        while True:
            line = stdin.readline()
            if not line:
                break
            if not line.strip():
                continue
            request = json.loads(line)
            request_id = request.pop("requestId", None)
            try:
                answer = _as_answer(handle(request))
            except Exception as err:  # the task fails, not the process
                traceback.print_exc(file=sys.stderr)
                sys.stderr.flush()
                if request_id is None:
                    failed = True
                    continue
                answer = {"error": "%s: %s" % (type(err).__name__, err)}
            if request_id is not None:
                answer = dict(answer, requestId=request_id)
            out.write(json.dumps(answer) + "\n")
            out.flush()
    finally:
        sys.stdout = out
    if failed:
        sys.exit(1)


def _as_answer(result):
    if isinstance(result, str):
        return {"output": result}
    if isinstance(result, dict) and ("output" in result or "children" in result):
        return result
    raise TypeError("the handler returned %r: return an output file name, or a dict with output or children" % (result,))
