"""How fast the simulator steps patients (issue 29): single-env steps/s and vector-env
patient-steps/s, the model's recurrent state carried from step to step, against the 0.2.0
simulator's model calls, which re-ran the network over the whole history for each token
column (measured here in the same run, on the same network).

    python -m benchmarks.simulator_speed [--patients 1,64,512,4096] [--seconds 5] [--workers 2]
        [--no-record]

The default model is trained for one step on the demo cohort with mechanical ventilation as
the treatment (speed does not depend on the weights). For each number of patients:

- new: `VectorPatientEnv` (or `PatientEnv` for one patient) stepped with random treatments
  for about ``--seconds``: patient-steps per second of the whole `step` (model, decoding,
  constraints, observations, reward);
- 0.2.0 model calls: `Simulator.draw_state` (the history re-run) for every step of the same
  episodes: patient-steps per second of the model calls alone, so the ratio new / old
  understates the speed-up (0.2.0 also rebuilt a pandas table of the history every step);
- sampler: `HealthGym.sample_batches` of whole patients, batches of the same size, on the same
  network (what the model allows without a policy in the loop);
- floor: the network's column loop alone (per token column, its MLP, head and draw; no
  kernel, constraints, decoding or reward), the most any step of this network reaches here;
- flat: the new step's time at the episode's last steps over its first steps (1 = the cost
  does not grow with the episode's length);
- bound: the machine's matmul GFLOP/s (at the threads used) over the network's FLOPs per
  patient-step, the rate no implementation can beat.

Each is measured at 1 and 2 threads (``--threads``; the machines here have 2 cores). Then, for
every vector size, one process at one thread stepped without pause (auto-reset) against the
same patients split among ``--workers`` processes of one thread each (`rl.workers`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import header, machine, matmul_peak, publish, table

SECTION = "## The simulator at RL speed (issue 29)"
ACTION = "MechVent"


def train_run(folder: Path) -> Path:
    """The default model, one step on the demo cohort, MechVent the treatment."""
    import healthgym as hg

    demo = hg.datasets.demo()
    demo.schema[ACTION].role = "action"
    hg.HealthGym().fit(demo, folder, max_minutes=1e-6, progress=False)
    return folder


def step_flops(sim: Any) -> float:
    """Multiply-adds x 2 of one patient-step: the GRU step and, per token column, the column
    MLP and its head (embedding lookups and the kernel's few features left out)."""
    seq = sim.net.sequence
    w = seq.position.embedding_dim
    gru = 2 * 3 * (w * w + w * w)
    blocks = sum(2 * (b.up.weight.numel() + b.down.weight.numel()) for b in seq.blocks)
    heads = sum(2 * w * v for v in seq.vocab)
    return float(gru + len(seq.vocab) * blocks + heads)


def new_rate(env: Any, n: int, seconds: float) -> tuple[float, float]:
    """Patient-steps/s of `env.step` for about `seconds`, and the time of the episode's late
    steps over its early ones (steps 8+ vs 1-4 of 12)."""
    rng = np.random.default_rng(0)
    sizes = env.action_space.nvec if hasattr(env.action_space, "nvec") else [env.action_space.n]
    by_step: dict[int, list[float]] = {}
    done_steps, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        env.reset(seed=int(rng.integers(2**31)))
        for t in range(int(env.sim.lengths.max()) - 1):
            act = rng.integers(0, sizes[0], size=n) if n > 1 else int(rng.integers(0, sizes[0]))
            t0 = time.perf_counter()
            env.step(act)
            by_step.setdefault(t, []).append(time.perf_counter() - t0)
            done_steps += n
    elapsed = time.perf_counter() - began
    early = np.median([x for t, xs in by_step.items() if 1 <= t <= 4 for x in xs])
    late = [x for t, xs in by_step.items() if t >= 8 for x in xs]
    return done_steps / elapsed, float(np.median(late) / early) if late else float("nan")


def stream_rate(env: Any, n: int, seconds: float) -> float:
    """Patient-steps/s of a vector env stepped without pause for about `seconds` (finished
    patients replaced by its auto-reset, as online RL steps it), after one reset."""
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    env.step(rng.integers(0, 2, size=n))  # a first step outside the clock
    done_steps, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        env.step(rng.integers(0, env.single_action_space.n, size=n))
        done_steps += n
    return done_steps / (time.perf_counter() - began)


def draw_state(sim: Any, static: torch.Tensor, prefix: torch.Tensor, rng: torch.Generator):
    """0.2.0's step: the state tokens of the last step of `prefix` drawn column by column,
    the network re-run over the whole history for each (`last_logits`)."""
    t, sequence = prefix.shape[1] - 1, sim.net.sequence
    with torch.no_grad():
        for j in range(sim.first_action_token):
            logits = sequence.last_logits(static, prefix)[:, j, : sequence.vocab[j]]
            probs = torch.softmax(logits.float() / sim.temperature, dim=-1)
            prefix[:, t, j] = torch.multinomial(probs, 1, generator=rng).squeeze(1)


def old_rate(sim: Any, n: int, seconds: float) -> float:
    """Patient-steps/s of 0.2.0's model calls: `draw_state` over the whole history."""
    gen = torch.Generator().manual_seed(0)
    done_steps, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        sim.begin(n, gen, np.random.default_rng(0), None)
        prefix = torch.zeros(n, sim.longest, sim.width, dtype=torch.long)
        for t in range(1, int(sim.lengths.max())):
            draw_state(sim, sim.static_tokens, prefix[:, : t + 1], gen)
            done_steps += n
    return done_steps / (time.perf_counter() - began)


def floor_rate(sim: Any, n: int, seconds: float) -> float:
    """Patient-steps/s of the network's column loop alone: per token column, the residual MLP,
    its head and an inverse-CDF draw, the columns one after another."""
    from healthgym.models.healthgym.sampler import Residual, head_matrices, pick

    seq = sim.net.sequence
    mlp, heads = Residual(seq.blocks, seq.norm), head_matrices(seq.heads, 1.0)
    tables = seq.column_in.joined().split(seq.vocab)
    d, w = len(seq.vocab), seq.position.embedding_dim
    base, u = torch.randn(d, n, w), torch.rand(d, n, dtype=torch.float64)
    done_steps, began = 0, time.perf_counter()
    with torch.no_grad():
        while time.perf_counter() - began < seconds:
            earlier = torch.zeros(n, w)
            for j in range(d):
                tok = pick(F.linear(mlp(base[j] + earlier), *heads[j]), u[j])
                earlier = earlier + F.embedding(tok, tables[j])
            done_steps += n
    return done_steps / (time.perf_counter() - began)


def sampler_rate(run: Path, n: int, seconds: float) -> float:
    """Patient-steps/s of `HealthGym.sample_batches` in batches of `n` patients."""
    import healthgym as hg

    model = hg.load(run)
    done_steps, began, seed = 0, time.perf_counter(), 0
    while time.perf_counter() - began < seconds:
        for rows in model.sample_batches(n, seed=seed, batch_size=n):
            done_steps += len(rows)
        seed += 1
    return done_steps / (time.perf_counter() - began)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--patients", default="1,64,512,4096", help="patients stepped together")
    p.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    p.add_argument("--threads", default="1,2", help="torch threads, each measured")
    p.add_argument("--workers", default="2", help="worker processes (`workers=`), each measured")
    p.add_argument("--no-record", action="store_true", help="print only")
    args = p.parse_args(argv)
    from healthgym.rl import env as simulator

    info = machine()
    run = train_run(Path(tempfile.mkdtemp(prefix="hg-simspeed-")) / "run")
    rows, peaks = [], {}
    for threads in (int(x) for x in args.threads.split(",")):
        torch.set_num_threads(threads)
        peaks[threads] = gflops = matmul_peak(threads=threads, size=1024)
        for n in (int(x) for x in args.patients.split(",")):
            env = simulator.make(run, reward="-(MAP_next < 65)", num_envs=None if n == 1 else n)
            new, flat = new_rate(env, n, args.seconds)
            old = old_rate(env.sim, n, args.seconds)
            floor = floor_rate(env.sim, n, args.seconds)
            sampler = sampler_rate(run, n, args.seconds)
            bound = gflops * 1e9 / step_flops(env.sim)
            rows.append(
                {
                    "threads": threads,
                    "patients": n,
                    "new patient-steps/s": new,
                    "0.2.0 model calls/s": old,
                    "new / 0.2.0": new / old,
                    "sampler patient-steps/s": sampler,
                    "network floor/s": floor,
                    "new / floor": new / floor,
                    "late / early step": flat,
                    "FLOP bound/s": bound,
                }
            )
            print(rows[-1], flush=True)
    torch.set_num_threads(1)
    split = []  # one process at one thread against `workers` processes of one thread each
    for n in (int(x) for x in args.patients.split(",") if int(x) > 1):
        reward = "-(MAP_next < 65)"
        one = stream_rate(simulator.make(run, reward=reward, num_envs=n), n, args.seconds)
        for workers in (int(x) for x in args.workers.split(",")):
            envs = simulator.make(run, reward=reward, num_envs=n, workers=workers)
            rate = stream_rate(envs, n, args.seconds)
            envs.close()
            split.append(
                {
                    "patients": n,
                    "workers": workers,
                    "one process patient-steps/s": one,
                    "workers patient-steps/s": rate,
                    "workers / one": rate / one,
                }
            )
            print(split[-1], flush=True)
    matmul = ", ".join(f"{g:.1f} GFLOP/s at {t} thread(s)" for t, g in peaks.items())
    text = (
        header("Simulator speed", "benchmarks.simulator_speed", argv, info)
        + f"\nmatmul {matmul}; network {step_flops(env.sim) / 1e3:.0f} kFLOP per patient-step\n\n"
        + table(rows)
        + "\n\nStepped without pause (auto-reset), one process against worker processes "
        + "(`workers=`, one thread each):\n\n"
        + table(split)
        + "\n"
    )
    return publish(text, args.no_record, SECTION)


if __name__ == "__main__":
    main()
