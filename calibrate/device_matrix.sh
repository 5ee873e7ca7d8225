#!/usr/bin/env bash
# The CUDA calibration matrix on a lent GPU machine, in one call (see README, "Calibration on a GPU").
# Expects wheels the image lacks in .whl/ (bitsandbytes, platformdirs, plotly) and writes everything
# under $OUT as it goes: the store (cuda.db), the environment, the logs and the error table.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-out}; mkdir -p "$OUT"
BUDGET=${BUDGET:-500}  # seconds for the whole matrix; a killed matrix resumes where it stopped
START=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . > "$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, transformers, peft, accelerate, bitsandbytes as b; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__, 'bitsandbytes', b.__version__)"
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
for preset in quick standard; do
  t=$(left); [ "$t" -gt 20 ] || break
  echo "== $preset ($t s left)"
  timeout "$t" vramplan calibrate --device cuda --preset "$preset" --db "$OUT/cuda.db" 2>&1 | tail -n 6 | tee -a "$OUT/matrix.log"
done
python3 -c "import sqlite3; c = sqlite3.connect('$OUT/cuda.db'); c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); c.execute('PRAGMA journal_mode=DELETE')"
vramplan calibrate --report --db "$OUT/cuda.db" > "$OUT/report.txt" 2>&1; cat "$OUT/report.txt"
