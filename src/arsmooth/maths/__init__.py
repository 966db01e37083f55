"""The method's mathematics: mixture-of-logistics likelihoods, the noise kernels q(x~ | x), the training
objectives (and the one registry of run kinds), and the two-stage pair's bounds and denoising."""
