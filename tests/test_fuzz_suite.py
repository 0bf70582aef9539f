"""Issue 12, item 6: the standing fuzz campaign's quick subset (the long run: benchmarks/fuzz_campaign.py).

A few hundred crafted .tqm, HF and GGUF inputs (checksum-valid config/shape/offset edits, aliased tensor data,
header forgeries, flips, truncations, tokenizer garbage) go through load / generate / verify in a worker
subprocess with a 60 s timeout, across the resident, streamed, fused and in-memory paths. Only clean
one-line errors and correct output are allowed: no traceback, signal, hang or silent wrong output.
"""
from fuzz_runner import format_table, run_campaign

CASES = 240


def test_fuzz_subset_has_only_clean_errors_or_correct_output():
    r = run_campaign(CASES, seed=0, timeout=60.0)
    assert sum(r["table"][k] for k in r["table"] if ":*" not in k[0]) == CASES
    assert not r["bad"], format_table(r["table"]) + "\n" + "\n".join(map(str, r["bad"]))
    errors = sum(v for (c, o), v in r["table"].items() if o == "error" and ":*" not in c)
    ran = sum(v for (c, o), v in r["table"].items() if o == "ran" and ":*" not in c)
    assert errors > CASES // 3 and ran > 10   # the campaign exercises both refusals and accepted edits
