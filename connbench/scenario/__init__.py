"""The scenario stage, driver-free: the file model, knobs, reading, expansion into cells, predictions, your project."""
