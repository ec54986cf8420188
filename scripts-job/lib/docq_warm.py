"""docq_warm: turn a Python function into a docq job, warm or one-shot.

    import sys, os
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
    from docq_warm import serve

    def handle(req):              # req: the request as a dict (mode, input|inputs, outputDir, params, task)
        ...                       # write the result under req["outputDir"]
        return "result.json"      # or {"output": "result.json"} or {"children": [{"input": "part-1"}, ...]}
                                  # or {"outputBytes": b"..."}: the output itself (a file when docq asks for files)
                                  # or {"children": [{"inputBytes": b"..."}, ...]}: each part itself (the same)

    serve(handle)

With `warm: true` in job.yaml docq starts the script once per worker slot and sends one JSON
request per line on stdin, each with a "requestId"; serve() calls handle() for each one and
prints the answer, with the same requestId, as one JSON line on stdout. With `concurrency: N` in
job.yaml docq may send up to N requests before the first is answered: serve() calls handle() for
each in a thread of its own as it arrives (threads are kept and reused), so a handler that waits
(a subprocess, a socket, a model server, time.sleep) lets the others go on; where they compute,
Python's GIL runs one at a time. Answers go out as each is done, in any order. A handler that
shares state between requests must then guard it (threading.Lock); with the default
concurrency of 1 docq sends the next request only after the answer, so they never overlap.
Everything before serve() (imports, models, connections) is loaded once per process, not once per task.

With `inline: true` as well, a small document comes inside the request line and the output goes
back inside the answer. handle() then also gets the document's bytes as req["inputBytes"] (a
merge: its parts' as req["inputsBytes"]), and returning {"outputBytes": b"..."} (a split: children
with "inputBytes") spares every file; req["input"], req["inputs"] and req["outputDir"] still work
(made when read), so a handler written for files runs unchanged.

Without `warm: true` the same script is a one-shot job: one request without requestId, then
end of input; serve() answers it and returns (an exception then means exit code 1).

While handle() runs, sys.stdout is stderr: print() cannot corrupt the protocol, and what it
prints is kept in the task's stderr tail. An exception fails only its task (the answer is
{"requestId": ..., "error": "..."}, the traceback goes to stderr); the process stays up, and the
task is retried after its backoff. Raise Fatal for a document that can never work (a broken
file): the answer then says "retry": false and the task ends in error at once.

    from docq_warm import serve, progress, Fatal

    def handle(req):
        for i, page in enumerate(pages):
            progress(i / len(pages), "page %d of %d" % (i + 1, len(pages)))   # shown in the task's record
        if broken:
            raise Fatal("not a PDF")
"""

import base64
import json
import os
import queue
import shutil
import sys
import threading
import traceback

__all__ = ["serve", "progress", "Fatal"]


class Fatal(Exception):
    """A failure no retry can fix: the task ends in error at once ({"error": ..., "retry": false})."""


# Where answers and progress go (the real stdout, saved by serve()), one line at a time whichever
# thread writes it; and the request a thread is handling.
_out = None
_out_lock = threading.Lock()
_current = threading.local()


def _write_line(line):
    with _out_lock:
        _out.write(json.dumps(line) + "\n")
        _out.flush()


def progress(fraction, message=None):
    """Reports how far the current request is (0..1) and what it does, e.g. progress(0.4, "page 4 of 10")."""
    if _out is None:
        return
    line = {"progress": float(fraction)}
    if message is not None:
        line["message"] = str(message)
    request_id = getattr(_current, "request_id", None)
    if request_id is not None:
        line["requestId"] = request_id
    _write_line(line)


def serve(handle):
    """Answers requests from stdin with handle(request) until stdin ends."""
    global _out
    stdin = sys.stdin.buffer
    out = sys.stdout
    _out = out
    sys.stdout = sys.stderr
    handlers = _Handlers(handle)
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
            if request_id is None:
                # One-shot: the one request, here; its failure is the exit code.
                answer_line, ok = _answer(handle, request, None)
                if answer_line is not None:
                    _write_line(answer_line)
                failed = failed or not ok
            else:
                handlers.start(request_id, request)
    finally:
        handlers.stop()
        sys.stdout = out
        _out = None
    if failed:
        sys.exit(1)


def _answer(handle, request, request_id):
    """Handles one request: its answer line (a warm request's carries its id; None: a one-shot
    request's exception, which has none) and whether a one-shot request succeeded."""
    _current.request_id = request_id
    try:
        if request.get("inline") is True:
            answer = _answer_inline(handle, request)
        else:
            answer = _file_answer(handle(request), request)
        ok = True
    except Fatal as err:  # the task fails for good, whatever its tries left
        answer = {"error": str(err) or "Fatal", "retry": False}
        ok = request_id is not None
    except Exception as err:  # the task fails, not the process
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        if request_id is None:
            return None, False
        answer = {"error": "%s: %s" % (type(err).__name__, err)}
        ok = True
    finally:
        _current.request_id = None
    return (answer if request_id is None else dict(answer, requestId=request_id)), ok


class _Handlers:
    """The threads that handle warm requests: one per request held at once (docq sends at most
    `concurrency` before their answers), each kept for the next request once it has answered."""

    def __init__(self, handle):
        self.handle = handle
        self.requests = queue.Queue()
        self.threads = []
        self.idle = 0
        self.lock = threading.Lock()

    def start(self, request_id, request):
        with self.lock:
            if self.idle > 0:
                self.idle -= 1
            else:
                thread = threading.Thread(target=self._run, name="docq-request-%d" % (len(self.threads) + 1), daemon=True)
                self.threads.append(thread)
                thread.start()
        self.requests.put((request_id, request))

    def _run(self):
        while True:
            item = self.requests.get()
            if item is None:
                return
            request_id, request = item
            try:
                line, _ = _answer(self.handle, request, request_id)
            except BaseException as err:  # sys.exit() in a handler: the process ends, as it does without threads
                traceback.print_exc(file=sys.stderr)
                sys.stderr.flush()
                os._exit(err.code if isinstance(err, SystemExit) and isinstance(err.code, int) else 1)
            # Free before the answer leaves: the request docq sends on reading it finds this thread.
            with self.lock:
                self.idle += 1
            try:
                _write_line(line)
            except OSError:  # docq is gone: nobody to answer
                traceback.print_exc(file=sys.stderr)

    def stop(self):
        """Lets every request held finish and answer, then ends the threads."""
        for _ in self.threads:
            self.requests.put(None)
        for thread in self.threads:
            thread.join()


# The most bytes an inline answer carries (its line, in base64, stays under docq's 4 MB limit of a stdout line).
INLINE_OUTPUT_MAX_BYTES = 2 * 1024 * 1024


_free_inline_dirs = []
_inline_dirs_made = [0]
_inline_dirs_lock = threading.Lock()


class _InlineRequest(dict):
    """An inline request as handle() sees it: "inputBytes" holds the document (a merge:
    "inputsBytes" its parts); "input" (or "inputs") and "outputDir" are made only when read (the
    documents written in a folder of this process's own dir, which docq made for this process and
    removes when it ends; an empty `out/` beside them)."""

    def __init__(self, fields, input_bytes, inputs_bytes):
        dict.__init__(self, fields)
        if input_bytes is not None:
            dict.__setitem__(self, "inputBytes", input_bytes)
        if inputs_bytes is not None:
            dict.__setitem__(self, "inputsBytes", inputs_bytes)
        self._input_bytes = input_bytes
        self._inputs_bytes = inputs_bytes
        self.folder = None
        self.written = []

    def _folder(self):
        if self.folder is None:
            try:
                self.folder = _free_inline_dirs.pop()
            except IndexError:
                self.folder = _new_inline_dir()
        return self.folder

    def _write_once(self, name, data):
        path = os.path.join(self._folder(), name)
        if name not in self.written:
            with open(path, "wb") as f:
                f.write(data)
            self.written.append(name)
        return path

    def __getitem__(self, key):
        if key == "outputDir":
            return os.path.join(self._folder(), "out")
        if key == "input" and self._input_bytes is not None:
            return self._write_once("input", self._input_bytes)
        if key == "inputs" and self._inputs_bytes is not None:
            return [self._write_once("input-%d" % i, data) for i, data in enumerate(self._inputs_bytes)]
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def __contains__(self, key):
        return (
            key == "outputDir"
            or (key == "input" and self._input_bytes is not None)
            or (key == "inputs" and self._inputs_bytes is not None)
            or dict.__contains__(self, key)
        )


def _new_inline_dir():
    with _inline_dirs_lock:
        _inline_dirs_made[0] += 1
        number = _inline_dirs_made[0]
    folder = os.path.abspath("inline-%d" % number)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(os.path.join(folder, "out"))
    return folder


def _answer_inline(handle, request):
    """An inline request (job.yaml inline: true): the documents come inside the line and the output
    goes back inside the answer. handle() gets the document's bytes as req["inputBytes"] (a merge:
    its parts' as req["inputsBytes"]) and may return {"outputBytes": b"..."} (a split: children with
    "inputBytes"): then no file is made at all; req["input"], req["inputs"] and req["outputDir"]
    work as always (made when read), and a file answered there goes back as its bytes."""
    fields = dict(request)
    fields.pop("inline", None)
    input_base64 = fields.pop("inputBase64", None)
    inputs_base64 = fields.pop("inputsBase64", None)
    req = _InlineRequest(
        fields,
        None if input_base64 is None else base64.b64decode(input_base64),
        None if inputs_base64 is None else [base64.b64decode(part) for part in inputs_base64],
    )
    reusable = False
    try:
        reply = _inline_reply(handle(req), req.folder)
        reusable = True
        return reply
    finally:
        if req.folder is not None:
            for name in req.written:
                os.unlink(os.path.join(req.folder, name))
            if reusable and not os.listdir(os.path.join(req.folder, "out")):
                _free_inline_dirs.append(req.folder)
            else:
                shutil.rmtree(req.folder, ignore_errors=True)


def _inline_reply(result, folder):
    """The answer to an inline request: the output's bytes ({"outputBytes": ...}, or a file answered
    in outputDir, read and removed), or each child's ("inputBytes", or a file answered in outputDir)."""
    if isinstance(result, dict) and "outputBytes" in result:
        data = _bytes_of(result["outputBytes"])
        _check_inline_size(len(data), "the output")
        return {"outputBase64": _base64_of(data)}
    answer = _as_answer(result)
    if "output" in answer:
        path = _answered_file(answer["output"], folder, "output")
        _check_inline_size(os.path.getsize(path), "the output")
        with open(path, "rb") as f:
            data = f.read()
        os.unlink(path)
        return {"outputBase64": _base64_of(data)}
    files = {}  # files answered for parts, read once each (one may be several parts' input) and removed after
    total = 0
    children = []
    for child in answer["children"]:
        if "inputBytes" in child:
            data = _bytes_of(child["inputBytes"])
        else:
            path = _answered_file(child["input"], folder, "child input")
            if path not in files:
                with open(path, "rb") as f:
                    files[path] = f.read()
            data = files[path]
        total += len(data)
        _check_inline_size(total, "the parts together")
        part = {"inputBase64": _base64_of(data)}
        if "params" in child:
            part["params"] = child["params"]
        children.append(part)
    for path in files:
        os.unlink(path)
    return {"children": children}


def _answered_file(name, folder, what):
    """The path of a file the handler answered: a regular file inside the request's outputDir, else Fatal."""
    if folder is None:
        raise Fatal("the %s %s is not inside outputDir" % (what, json.dumps(name)))
    output_dir = os.path.join(folder, "out")
    path = os.path.abspath(os.path.join(output_dir, name))
    if path == output_dir or os.path.commonpath([output_dir, path]) != output_dir:
        raise Fatal("the %s %s is not inside outputDir" % (what, json.dumps(name)))
    if os.path.islink(path) or not os.path.isfile(path):
        raise Fatal("the %s %s is not a regular file" % (what, json.dumps(name)))
    return path


def _base64_of(data):
    return base64.b64encode(data).decode("ascii")


def _check_inline_size(size, what):
    """Raises Fatal, saying so, when `size` bytes (`what`) do not fit an inline answer."""
    if size > INLINE_OUTPUT_MAX_BYTES:
        raise Fatal(
            "%s: %d bytes, and an inline answer carries at most %d (drop inline: true from job.yaml for larger outputs)"
            % (what, size, INLINE_OUTPUT_MAX_BYTES)
        )


def _bytes_of(output_bytes):
    if isinstance(output_bytes, str):
        return output_bytes.encode("utf-8")
    if isinstance(output_bytes, (bytes, bytearray, memoryview)):
        return bytes(output_bytes)
    raise TypeError("the handler answered bytes of type %s: give bytes or a str" % type(output_bytes).__name__)


def _file_answer(result, request):
    """A handler's answer to a request with files: {"outputBytes": ...} becomes the file `output` of
    its outputDir, a child's "inputBytes" the file `part-<i>`."""
    if isinstance(result, dict) and "outputBytes" in result:
        with open(os.path.join(request["outputDir"], "output"), "wb") as f:
            f.write(_bytes_of(result["outputBytes"]))
        return {"output": "output"}
    answer = _as_answer(result)
    if "children" not in answer or not any("inputBytes" in child for child in answer["children"]):
        return answer
    children = []
    for i, child in enumerate(answer["children"]):
        child = dict(child)
        if "inputBytes" in child:
            with open(os.path.join(request["outputDir"], "part-%d" % i), "wb") as f:
                f.write(_bytes_of(child.pop("inputBytes")))
            child["input"] = "part-%d" % i
        children.append(child)
    return dict(answer, children=children)


def _as_answer(result):
    if isinstance(result, str):
        return {"output": result}
    if isinstance(result, dict) and ("output" in result or "children" in result):
        return result
    raise TypeError("the handler returned %r: return an output file name, or a dict with output or children" % (result,))
