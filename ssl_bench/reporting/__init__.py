"""Reports of a runs folder: tables, statistics, figures, results.csv, and a run's reconstructions."""
