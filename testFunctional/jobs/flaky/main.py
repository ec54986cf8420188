import json, os, sys

req = json.loads(sys.stdin.readline())
out = req["outputDir"]
mode = req["mode"]
params = req["params"]
healed = os.path.exists(params["flag"])


def answer(text, name="o.txt"):
    with open(os.path.join(out, name), "w") as f:
        f.write(text)
    print(json.dumps({"output": name}))


def fail():
    print(f"flaky: {params['flag']} does not exist yet", file=sys.stderr)
    sys.exit(1)


if mode == "split" and params.get("split"):
    lines = [l for l in open(req["input"]).read().split("\n") if l]
    children = []
    for i, line in enumerate(lines):
        name = f"part-{i}.txt"
        with open(os.path.join(out, name), "w") as f:
            f.write(line)
        children.append({"input": name})
    print(json.dumps({"children": children}))
elif mode == "merge":
    answer("\n".join(open(p).read() for p in req["inputs"]), "merged.txt")
else:
    text = open(req["input"]).read()
    if (mode == "split" or text == "flaky") and not healed:
        fail()
    answer(text.upper())
