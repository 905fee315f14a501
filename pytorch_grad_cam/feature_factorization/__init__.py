"""Deep Feature Factorization: concepts shared by a batch of images, found by NMF."""
