"""Reusable networks: MLP and convolutional encoders/decoders, and pixel likelihoods."""
