"""The second-order response model: one quantity's Taylor expansion in r from probe norms, the predicted
curves of a run, and their decomposition (spread vs drift) and validation. numpy only."""
