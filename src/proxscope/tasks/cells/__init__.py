"""cells: CNNCS cell detection by compressed-sensing output encoding (:class:`.task.CellsTask`)."""
