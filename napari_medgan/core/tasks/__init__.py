"""One module per task: its nets, its train step, its inference. See ``registry``."""
