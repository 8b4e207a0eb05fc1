"""Developer tools: protobuf generation, the load generator and the benchmark suite."""
