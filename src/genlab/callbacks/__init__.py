"""Lightning callbacks: image grids of samples and reconstructions."""
