"""Item x item co-occurrence: in memory, streamed out of core, on Spark."""
