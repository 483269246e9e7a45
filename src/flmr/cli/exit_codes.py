"""Exit codes of the ``flmr`` command, which scripts can rely on."""

EXIT_OK = 0
EXIT_FAILURE = 1  # the command was valid but failed: missing or invalid files, a checkpoint that cannot load
EXIT_USAGE = 2  # the command line is wrong: unknown command or option, invalid value
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT
EXIT_BROKEN_PIPE = (
    141  # the reader of the output went away (`flmr info --json | head`), as shells report SIGPIPE
)

EXIT_CODES_HELP = """exit codes:
  0    success
  1    runtime error: a missing or invalid index, collection, image or checkpoint, an index built
       with another checkpoint, an index that exists already (without --overwrite)
  2    usage error: unknown command or option, missing or invalid option value
  130  interrupted (Ctrl-C)
  141  the output's reader stopped reading (e.g. `| head`); nothing is printed about it"""
