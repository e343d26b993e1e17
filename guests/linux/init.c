/*
 * labvmm's init for the small Linux guest: PID 1 of an embedded initramfs.
 *
 * It mounts proc and sysfs, prints what `uname -a` would (from uname(2)) and
 * /proc/cpuinfo, then reads commands from the console after an `init$ ` prompt:
 *
 *   cat FILE     print a file (/proc/cpuinfo, /proc/interrupts, /etc/motd, ...)
 *   uname        print the uname(2) line again
 *   echo WORDS   print WORDS
 *   cpus         print how many harts the kernel brought online
 *   help         list the commands
 *   poweroff     sync and power the machine off through reboot(2)
 *
 * The console is the kernel's /dev/console in canonical mode with echo, so a
 * typed line comes back as a whole and its characters are echoed by the tty.
 * Built by guests/linux/build.py: riscv64-linux-gnu-gcc -static -Os.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/utsname.h>
#include <unistd.h>

#define LINE_MAX_BYTES 256

/* Write all of s to stdout (the console); unbuffered, so output order is exact. */
static void say(const char *s)
{
	size_t left = strlen(s);
	while (left > 0) {
		ssize_t n = write(1, s, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		s += n;
		left -= (size_t)n;
	}
}

static void say_errno(const char *what, const char *arg)
{
	char line[LINE_MAX_BYTES + 64];
	snprintf(line, sizeof line, "%s %s: %s\n", what, arg, strerror(errno));
	say(line);
}

static void cat(const char *path)
{
	char buf[512];
	ssize_t n;
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		say_errno("cat:", path);
		return;
	}
	while ((n = read(fd, buf, sizeof buf - 1)) > 0) {
		buf[n] = '\0';
		say(buf);
	}
	close(fd);
}

/* The fields `uname -a` prints, in its order: sysname nodename release version machine. */
static void print_uname(void)
{
	struct utsname u;
	char line[6 * sizeof u.release];
	if (uname(&u) != 0) {
		say_errno("uname:", "");
		return;
	}
	snprintf(line, sizeof line, "%s %s %s %s %s\n", u.sysname, u.nodename, u.release,
		 u.version, u.machine);
	say(line);
}

/* Harts online, from the kernel's own list ("0" or "0-3" or "0,2-3"). */
static void print_cpus(void)
{
	char buf[128], line[160];
	int count = 0, fd = open("/sys/devices/system/cpu/online", O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
	if (fd >= 0)
		close(fd);
	if (n <= 0) {
		say_errno("cpus:", "/sys/devices/system/cpu/online");
		return;
	}
	buf[n] = '\0';
	for (char *p = buf; *p && *p != '\n';) {
		int lo, hi, used;
		if (sscanf(p, "%d%n", &lo, &used) != 1)
			break;
		p += used;
		hi = lo;
		if (*p == '-' && sscanf(p + 1, "%d%n", &hi, &used) == 1)
			p += 1 + used;
		count += hi - lo + 1;
		if (*p == ',')
			p++;
	}
	snprintf(line, sizeof line, "cpus: %d online (%.*s)\n", count, (int)strcspn(buf, "\n"), buf);
	say(line);
}

static void run(char *line)
{
	char *arg = strchr(line, ' ');
	if (arg)
		*arg++ = '\0';
	if (strcmp(line, "") == 0) {
		return;
	} else if (strcmp(line, "cat") == 0 && arg && *arg) {
		cat(arg);
	} else if (strcmp(line, "uname") == 0) {
		print_uname();
	} else if (strcmp(line, "echo") == 0) {
		say(arg ? arg : "");
		say("\n");
	} else if (strcmp(line, "cpus") == 0) {
		print_cpus();
	} else if (strcmp(line, "help") == 0) {
		say("commands: cat FILE, uname, echo WORDS, cpus, help, poweroff\n");
	} else if (strcmp(line, "poweroff") == 0) {
		say("init: powering off\n");
		sync();
		reboot(RB_POWER_OFF);
		say_errno("poweroff:", "reboot(2)");
	} else {
		say("init: unknown command: ");
		say(line);
		say(" (try help)\n");
	}
}

int main(void)
{
	char line[LINE_MAX_BYTES];

	if (mount("proc", "/proc", "proc", 0, NULL) != 0)
		say_errno("init: mount", "/proc");
	if (mount("sysfs", "/sys", "sysfs", 0, NULL) != 0)
		say_errno("init: mount", "/sys");
	say("labvmm init: uname -a\n");
	print_uname();
	say("labvmm init: /proc/cpuinfo\n");
	cat("/proc/cpuinfo");
	for (;;) {
		size_t len = 0;
		say("init$ ");
		for (;;) { /* one line, read(2) by read(2): a tty in canonical mode ends it at \n */
			ssize_t n = read(0, line + len, sizeof line - 1 - len);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) { /* no console input (EOF): keep PID 1 alive, idle */
				pause();
				continue;
			}
			len += (size_t)n;
			if (line[len - 1] == '\n' || len == sizeof line - 1)
				break;
		}
		line[len] = '\0';
		line[strcspn(line, "\r\n")] = '\0';
		run(line);
	}
}
