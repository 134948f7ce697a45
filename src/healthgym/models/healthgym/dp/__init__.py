"""Differential privacy for the default model (`dp/`): an (epsilon, delta) guarantee per patient.

`HealthGym(dp_epsilon=E)` trains the same network under a patient-level guarantee: two
cohorts that differ by one patient (all of the patient's steps; add or remove) give every
released output (tokenizer, weights, synthetic patients) with probabilities within a factor
e^E, up to delta. Everything the run computes from the real patients goes through one of
two Gaussian mechanisms, composed by one Renyi-DP accountant (Opacus' RDP analysis):

1. **The tokenizer** (`fit_tokenizer`): every data-dependent part is a noisy histogram in
   which each patient weighs at most 1 (a dynamic variable's values weigh 1/n each for a
   patient's n values), so each histogram has L2 sensitivity 1: the range of a real
   variable without declared `min` and `max` (signed decade buckets; those whose noisy
   count clears a threshold), its quantile grid (a 32-bin histogram between those bounds,
   made monotone by isotonic regression; bin edges and the decoding grid are its
   quantiles), its decimals (a histogram of each patient's decimals), each variable's
   missing or level shares (where the heads start), the longest stay (power-of-two then
   exact length buckets; the length head starts at them) and the time origin (a noisy
   argmax of first steps). Values outside a range are clipped to it; stays longer than the
   longest stay are cut. Together these cost `dp_tokenizer_share` of epsilon on their own
   (one Gaussian of noise multiplier `sigma_t`: zero-concentrated DP adds up).
   Levels, kinds and missing flags come from the schema, which is public input.
2. **DP-SGD** (`PrivateTrainer`): Poisson sampling (each patient in each step with
   probability q = batch_size / N), per-patient gradients (`torch.func`: a GRU written out
   step by step with nn.GRU's parameters, because vmap has no batching rule for the fused
   GRU), each of the two parts (the static model; the sequence model) clipped to
   `dp_max_grad_norm` C, Gaussian noise of SD sigma * C * sqrt(2) on each part (the pair
   has sensitivity C sqrt(2)), divided by the expected batch q N. sigma is the smallest
   noise multiplier for which the tokenizer and `dp_epochs` epochs of steps together cost at
   most epsilon; training stops when those steps are taken (or at `max_minutes`), and a
   step that would exceed the budget is never taken. There is no validation split and no
   early stopping (both would look at real patients), the heads start at the tokenizer's
   noisy counts (not the data's marginals), and the static model is trained in every step.

The noise and the Poisson batches come from a generator seeded from the operating system's
entropy, never from `seed`, and are not saved: a resumed run draws fresh ones (the
guarantee holds; the run is not reproducible bit for bit). What is not covered is listed in
`NOT_COVERED` and written to `model.json`. Opacus is imported only in this package, only in DP mode.
"""
