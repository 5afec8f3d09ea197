"""Rebuilds the recipe samples in this folder from the test fixtures (run from the repository root:
`python3 datasets/samples/make_samples.py`). Deterministic: same fixtures, same bytes.

- {tr,et,en,fa,zh}-text.txt: the distinct sentences of tests/fixtures/tokenizer-train.txt in that language
  (plus tests/fixtures/shards/et.txt and en.jsonl), in first-seen order, grouped five to a document;
  documents are separated by a blank line (the .txt layout `shards build` reads; `vocab train` reads its
  non-empty lines; the `perplexity` eval task reads the file as one document).
- en-et-parallel.tsv: English source strings of the first Alpaca sample records and their hand-written
  Estonian translations from tests/fixtures/alpaca/make_replay_cache.py (single-line pairs only),
  one `English<TAB>Estonian` pair per line (`translation-pairs` TSV input).
"""
import ast, json, os, re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.dirname(os.path.abspath(__file__))

def sentences(line):
    # Split after sentence-final punctuation (Latin, Persian, Chinese).
    parts = re.split(r"(?<=[.!?。！？؟])\s*", line.strip())
    return [p.strip() for p in parts if p.strip()]

def lang(s):
    if re.search("[\u0600-\u06ff]", s):
        return "fa"
    if re.search("[\u4e00-\u9fff]", s):
        return "zh"
    if re.search("[ıİşŞğĞçÇ]", s):
        return "tr"
    if re.search("[õÕäÄöÖüÜšžŠŽ]", s):
        return "et"
    # English: letters and ordinary punctuation only, a few words, no code.
    if re.search(r"\b(Tarih|saat|kişi)\b", s):
        return None
    if re.fullmatch(r"[A-Z][A-Za-z0-9 ,.;:'’\"()!?-]+[.!?]", s) and len(s.split()) >= 4:
        return "en"
    return None

seen = {k: [] for k in ["tr", "et", "en", "fa", "zh"]}
def add(k, s):
    if s not in seen[k]:
        seen[k].append(s)

for line in open(os.path.join(FIX, "tokenizer-train.txt"), encoding="utf-8"):
    for s in sentences(line):
        k = lang(s)
        if k in seen:
            add(k, s)
for para in open(os.path.join(FIX, "shards", "et.txt"), encoding="utf-8").read().split("\n\n"):
    for s in sentences(" ".join(para.split())):
        add("et", s)
for line in open(os.path.join(FIX, "shards", "en.jsonl"), encoding="utf-8"):
    for s in sentences(" ".join(json.loads(line)["text"].split())):
        add("en", s)

for k, ss in seen.items():
    docs = [" ".join(ss[i:i + 5]) for i in range(0, len(ss), 5)]
    with open(os.path.join(OUT, f"{k}-text.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(docs) + "\n")

# EN-ET pairs: the ET dict of make_replay_cache.py, with d[i][...] keys resolved from alpaca_sample.json.
src = open(os.path.join(FIX, "alpaca", "make_replay_cache.py"), encoding="utf-8").read()
d = json.load(open(os.path.join(FIX, "alpaca", "alpaca_sample.json"), encoding="utf-8"))
body = src[src.index("ET = {") + len("ET = "):src.index("\n}\n") + 2]
table = eval(compile(ast.parse(body, mode="eval"), "ET", "eval"), {"d": d})
with open(os.path.join(OUT, "en-et-parallel.tsv"), "w", encoding="utf-8") as f:
    for en, et in table.items():
        if "\n" in en or "\n" in et or "\t" in en or "\t" in et:
            continue
        f.write(f"{en}\t{et}\n")
