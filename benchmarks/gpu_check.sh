#!/usr/bin/env bash
# Health Gym v1 training speed on a CUDA GPU (issue 5, deliverable 4), as one prepared run.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine, from anywhere in the repo
#
# Finds a Python whose torch sees CUDA (python3, then python: the repo's .venv holds a CPU-only
# torch), prints the card (nvidia-smi) and torch's version, runs short correctness checks on the
# GPU (penalty: the trainer's, through the hand-written biLSTM, vs nn.LSTM with cuDNN off, fp64;
# trainer steps fp32 and amp, the penalty fp32 under amp and never through nn.LSTM), then
# `python -m benchmarks.train_speed --device cuda --amp` (ART shape and demo cohort: ours, ours
# with the previous penalty path (native CUDA LSTM, cuDNN off), ours with amp, the reference).
# Nothing is appended to BENCHMARKS.md there: the record is written to $OUT/benchmarks_gpu.md
# (and printed); add it here with
#   .venv/bin/python -c "import sys, pathlib; from benchmarks.common import record; \
#       record(pathlib.Path(sys.argv[1]).read_text())" PATH/TO/benchmarks_gpu.md
# Files in $OUT (default /tmp/gpu_check_out): env.txt, cuda_checks.log, train_speed_gpu.log
# (progress on stderr and the printed tables), benchmarks_gpu.md, status.txt.
# Without a CUDA torch it says so and exits 0 having run nothing.
#
# Settings: STEPS (timed steps per shape, default 2), LIMIT (seconds for the benchmark, default
# 420). For a dry run elsewhere: GPU_CHECK_PYTHON (interpreter), GPU_CHECK_DEVICE (default
# cuda) and GPU_CHECK_ARGS (replaces the benchmark's arguments after --device).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check_out}"
STEPS="${STEPS:-2}"
LIMIT="${LIMIT:-420}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
mkdir -p "$OUT"
started=$SECONDS
say() { printf '\n== %s\n' "$*"; }
status() { echo "$*" | tee "$OUT/status.txt"; }

{  # a group, not a subshell: PY stays set
    say "nvidia-smi"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
        nvidia-smi -L
    else
        echo "nvidia-smi: not found"
    fi

    say "Python with a CUDA torch"
    PY=""
    for cand in ${GPU_CHECK_PYTHON:-python3 python}; do
        if ! command -v "$cand" >/dev/null 2>&1; then
            echo "$cand: not found"
            continue
        fi
        echo "$cand = $(command -v "$cand"): $("$cand" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuda.is_available()", torch.cuda.is_available())' 2>&1 | tail -n 1)"
        if [ "$DEVICE" = cpu ] || "$cand" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
            PY="$cand"
            break
        fi
    done
    if [ -n "$PY" ]; then
        say "pip's torch ($PY -m pip show torch)"
        "$PY" -m pip show torch 2>/dev/null | grep -E '^(Name|Version|Location):' ||
            "$PY" -c 'import torch; print("Version:", torch.__version__, "(pip show failed)")'
        "$PY" -c 'import sys, torch; print("python", sys.version.split()[0]); print("cuDNN", torch.backends.cudnn.version())'
    fi
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [ -z "$PY" ]; then
    status "GPU CHECK NOT RUN: no Python here has a torch that sees CUDA (tried ${GPU_CHECK_PYTHON:-python3 python}); nothing was timed."
    exit 0
fi

export PYTHONPATH="src:.${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if ! "$PY" -c 'import numpy, pandas, scipy, sklearn, pyarrow, matplotlib, tqdm, yaml, click, threadpoolctl, healthgym' 2>"$OUT/status.txt"; then
    cat "$OUT/status.txt"
    status "GPU CHECK NOT RUN: $PY lacks a package healthgym needs (above)."
    exit 1
fi

say "Correctness checks on $DEVICE"
DEVICE="$DEVICE" timeout 120 "$PY" - <<'EOF' 2>&1 | tee "$OUT/cuda_checks.log"
import dataclasses, math, os, time

import torch

from benchmarks import train_speed
from benchmarks.cohorts import art_design
from healthgym.models.v1 import network as v1
from healthgym.models.v1.network import Critic, gradient_penalty, pearson_matrix
from healthgym.models.v1.config import V1Config
from healthgym.models.v1.trainer import V1Trainer

dev = torch.device(os.environ["DEVICE"])
if dev.type == "cuda":
    print("card:", torch.cuda.get_device_name(dev), "| CUDA", torch.version.cuda,
          "| cuDNN", torch.backends.cudnn.version(),
          "| TF32 matmul", torch.backends.cuda.matmul.allow_tf32,
          "cuDNN", torch.backends.cudnn.allow_tf32)
x, lengths, layout = art_design(n=64, length=20)
ok = True

# 1. The penalty as the trainer runs it (the hand-written biLSTM, every device) == the same
#    penalty through nn.LSTM with cuDNN off (the trainer's previous CUDA path, the benchmark's
#    second row), fp64: value and every critic gradient.
try:
    torch.manual_seed(0)
    a = Critic(layout, 32).double().to(dev)
    b = Critic(layout, 32).double().to(dev)
    b.load_state_dict(a.state_dict())
    calls = {"a": 0, "b": 0}  # nn.LSTM module calls: none in the trainer's penalty
    a.lstm.register_forward_hook(lambda *_: calls.__setitem__("a", calls["a"] + 1))
    b.lstm.register_forward_hook(lambda *_: calls.__setitem__("b", calls["b"] + 1))
    real = x.double().to(dev)
    fake = torch.rand(real.shape, generator=torch.Generator().manual_seed(2)).double().to(dev)
    ga = gradient_penalty(a, real, fake, torch.Generator(dev).manual_seed(1))
    ga.backward()
    with train_speed.native_penalty_lstm():
        gb = gradient_penalty(b, real, fake, torch.Generator(dev).manual_seed(1))
    gb.backward()
    assert v1.bilstm_final is not train_speed.native_final  # the swap was undone
    assert calls == {"a": 0, "b": 1}, calls  # the two paths differ as intended
    torch.testing.assert_close(ga, gb)
    for (k, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, msg=k)
    print(f"OK penalty: trainer path (hand-written biLSTM) == nn.LSTM cuDNN off (fp64), "
          f"GP {ga.item():.6f}")
except Exception as e:  # report and go on to the other checks
    ok = False
    print("FAIL penalty check:", type(e).__name__, e)

# 2. Trainer steps, fp32 and amp: finite losses; the critic MLP's output dtypes show that under
#    amp the scores' passes run bf16 while the penalty's critic pass stays fp32, and the
#    penalty never calls the critic's nn.LSTM module (hand-written biLSTM on every device).
cfg = V1Config(hidden=32, noise_dim=16, batch_size=32, device=str(dev))
rc = pearson_matrix(x.reshape(-1, x.shape[-1]).double()).float().to(dev)
real = x[:32].to(dev)
for amp in (False, True):
    try:
        t = V1Trainer(layout, dataclasses.replace(cfg, amp=amp))
        seen, lstm_calls = set(), set()
        phase = lambda: "penalty" if v1._PENALTY.get() else "scores"  # noqa: E731
        t.critic.mlp.register_forward_hook(lambda m, i, o: seen.add((phase(), o.dtype)))
        t.critic.lstm.register_forward_hook(lambda m, i, o: lstm_calls.add(phase()))
        t0 = time.perf_counter()
        losses = [t._step(real, rc) for _ in range(3)]
        secs = time.perf_counter() - t0
        assert all(math.isfinite(v) for step in losses for v in step.values()), losses
        assert ("penalty", torch.float32) in seen and ("penalty", torch.bfloat16) not in seen
        assert ("scores", torch.bfloat16 if amp else torch.float32) in seen, seen
        assert lstm_calls == {"scores"}, lstm_calls  # penalty: hand-written biLSTM, no nn.LSTM
        rounded = {k: round(v, 4) for k, v in losses[-1].items()}
        print(f"OK trainer amp={amp}: 3 steps in {secs:.2f} s, losses {rounded}, "
              f"critic MLP outputs {sorted((p, str(d)) for p, d in seen)}, "
              f"nn.LSTM called in: {sorted(lstm_calls)}")
    except Exception as e:
        ok = False
        print(f"FAIL trainer amp={amp}:", type(e).__name__, e)
print("checks:", "all OK" if ok else "SOME FAILED (the benchmark runs anyway)")
EOF

say "python -m benchmarks.train_speed --device $DEVICE (limit ${LIMIT} s)"
# shellcheck disable=SC2086
timeout "$LIMIT" "$PY" -m benchmarks.train_speed --device "$DEVICE" \
    ${GPU_CHECK_ARGS:---amp --steps "$STEPS" --no-threads} \
    --no-record --out "$OUT/benchmarks_gpu.md" 2>&1 | tee "$OUT/train_speed_gpu.log"
rc=${PIPESTATUS[0]}

if [ -s "$OUT/benchmarks_gpu.md" ] && [ "$rc" -eq 0 ]; then
    say "BENCHMARKS.md section ($OUT/benchmarks_gpu.md)"
    cat "$OUT/benchmarks_gpu.md"
    status "GPU CHECK DONE in $((SECONDS - started)) s: record in $OUT/benchmarks_gpu.md"
else
    status "GPU CHECK FAILED: train_speed exited $rc after $((SECONDS - started)) s (124: over ${LIMIT} s); progress so far in $OUT/train_speed_gpu.log"
    exit 1
fi
