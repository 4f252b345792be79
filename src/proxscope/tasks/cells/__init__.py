"""cells: CNNCS cell detection by compressed-sensing output encoding (simulate, train, predict,
evaluate, bench)."""
