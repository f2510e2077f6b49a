"""The foundation every other package stands on: paths, devices, model loading, run folders, config fields,
chat formatting and generation. It imports nothing else of RLHF Studio."""
