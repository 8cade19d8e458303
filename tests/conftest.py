"""Suite-wide set-up."""

import signal

# A shell starts background jobs (`pytest &`, nohup) with SIGINT ignored, and Python then
# leaves Ctrl-C ignored in this process and in every child it starts: the tests that send
# real SIGINTs would see nothing. Restore Python's own handler (children then start with the
# default disposition and install theirs).
signal.signal(signal.SIGINT, signal.default_int_handler)
