"""The datasets: MNIST, Fashion-MNIST, CIFAR-10, CelebA, image folders and the bundled digits (`image_sets`), and
the synthetic 1-d and 2-d sets (`synthetic`)."""
