#!/usr/bin/env bash
# CoLA, session 19: the first honest attempt at stronger first tiers on session 18's MPNet (build/cola's tier-2
# folders, linked into build/cola2 with their stage markers). Changes: 3x the TinyBERT-style corpus (12 and 24
# tries per row, was 4 and 8); the middle MiniLM 6 labelled epochs at lr 1e-4 with 2 corpus batches each (was 3 at
# 5e-5 with 1); first-tier candidates cnn3 and minilm3 (MiniLM's first 3 layers). Resumable: rerun after an interruption.
set -euo pipefail
cd /work/main
python scripts/build_cascade.py --data ../shared/data/cola --work build/cola2 --output build/cola2-compact --task cola \
    --label-names unacceptable,acceptable --metric mcc --holdout 527 --test-file dev_out_of_domain.tsv --base mpnet \
    --tier2-lr 3e-5 --middle-base minilm --middle-epochs 6 --middle-lr 1e-4 --middle-extra-ratio 2 --archs cnn3,minilm3 \
    --augment-rules tinybert --per-sentence 12 --per-long-sentence 24 --accurate-output build/cola2-accurate
