"""One screen per module: home, pickers, plan, confirm, progress, result, and the dialogs."""
