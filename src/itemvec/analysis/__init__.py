"""Reading a trained model: reports, plots, classification probes, clustering."""
