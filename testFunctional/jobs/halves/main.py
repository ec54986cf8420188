import json, os, sys

req = json.loads(sys.stdin.readline())
out = req["outputDir"]
mode = req["mode"]

def write(name, text):
    with open(os.path.join(out, name), "w") as f:
        f.write(text)
    return name

if mode == "merge":
    print(json.dumps({"output": write("merged.txt", "".join(open(p).read() for p in req["inputs"]))}))
    sys.exit(0)
lines = open(req["input"]).read().splitlines(keepends=True)
if mode in ("split", "child") and len(lines) > 1 and req["task"]["depth"] < int(req["params"].get("depth", 2)):
    half = len(lines) // 2
    print(json.dumps({"children": [{"input": write("a.txt", "".join(lines[:half]))}, {"input": write("b.txt", "".join(lines[half:]))}]}))
else:
    print(json.dumps({"output": write("upper.txt", "".join(lines).upper())}))
