# tty1 runs clonebay-menu itself (getty@tty1.service, CLONEBAY_MENU=1); this starts it only for a
# login on tty1 without it. The serial console and other ttys: a plain root shell.
[ -f ~/.bashrc ] && . ~/.bashrc
case "$(tty)" in
/dev/tty1)
	if [ -z "${CLONEBAY_MENU:-}" ]; then
		export CLONEBAY_MENU=1
		exec /usr/local/bin/clonebay-menu
	fi
	;;
/dev/ttyS*)
	# A serial line reports a 0x0 size; give full-screen programs a sane one.
	stty rows 40 cols 120 2>/dev/null
	echo "clonebay live system: root shell on the serial console; try: clonebay list"
	;;
esac
