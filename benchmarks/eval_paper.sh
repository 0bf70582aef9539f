#!/bin/sh
# The paper's accuracy/latency table for the default model (docs/eval.md, "Results").
# Each step resumes from the samples already in $OUT, so the script can be re-run after a stop.
#   LIMITS: per-task question counts; empty = full test sets (hours on 2 cores for MMLU 5-shot).
set -e
BIN=${BIN:-.venv/bin}
OUT=${OUT:-benchmarks/eval_results/paper}
TQM=${TQM:-eval-out/models}
LIMITS=${LIMITS:-mmlu=150}
SMALL=${SMALL:-arc_challenge=300,arc_easy=300,mmlu=60}
TASKS=arc_challenge,mmlu,arc_easy
mkdir -p "$TQM"
[ -f "$TQM/smol-8bit.tqm" ] || $BIN/tinyqmoe compress default -o "$TQM/smol-8bit.tqm" --bits 8
[ -f "$TQM/smol-4bit.tqm" ] || $BIN/tinyqmoe compress default -o "$TQM/smol-4bit.tqm" --bits 4
$BIN/tinyqmoe eval default:f32 --tasks $TASKS ${LIMITS:+--limit $LIMITS} --output "$OUT/Original"
$BIN/tinyqmoe eval default:int8 --tasks $TASKS ${LIMITS:+--limit $LIMITS} --output "$OUT/8-bit"
$BIN/tinyqmoe eval "$TQM/smol-8bit.tqm" --tasks $TASKS --limit $SMALL --output "$OUT/Compressed"
$BIN/tinyqmoe eval "$TQM/smol-4bit.tqm" --tasks $TASKS --limit $SMALL --output "$OUT/4-bit"
# Tables: scoring is done above, so these only pair the stored samples (and load each model once).
$BIN/tinyqmoe eval --compare Original=default:f32 8-bit=default:int8 --tasks $TASKS \
    ${LIMITS:+--limit $LIMITS} --output "$OUT"
$BIN/tinyqmoe eval --compare Original=default:f32 8-bit=default:int8 "Compressed=$TQM/smol-8bit.tqm" \
    "4-bit=$TQM/smol-4bit.tqm" --tasks $TASKS --limit $SMALL --output "$OUT/four" --variants-dir "$OUT"
