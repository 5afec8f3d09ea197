"""Writes big.jsonl: ~100 MB of text ({"text": ...} per line) for the shards build benchmark.
Words from a 20k syllable vocabulary with Zipf-like frequencies; deterministic (seed 7)."""
import json, random
random.seed(7)
syl = ["ka","le","mi","tu","ran","sol","ve","de","ne","ğa","ış","öz","ül","ta","ko","ri","ma","pe","sa","lo","ün","çe","ji","ho","be"]
vocab = ["".join(random.choice(syl) for _ in range(random.randint(1,4))) for _ in range(20000)]
weights = [1/(i+1) for i in range(len(vocab))]
out = open("big.jsonl","w")
size = 0
n = 0
while size < 100_000_000:
    words = random.choices(vocab, weights, k=random.randint(30, 3000))
    paras = []
    i = 0
    while i < len(words):
        k = random.randint(20, 120)
        s = " ".join(words[i:i+k])
        paras.append(s[0].upper() + s[1:] + ".")
        i += k
    text = "\n".join(paras)
    line = json.dumps({"text": text}, ensure_ascii=False)
    out.write(line + "\n")
    size += len(text.encode())
    n += 1
print(n, size)
