"""One package per task (spots, spod, cells, seg), each with simulate / train / predict /
evaluate / bench wired from the core, and a ``cli`` module holding its click group."""
