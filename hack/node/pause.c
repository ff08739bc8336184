/* A minimal pod sandbox ("pause") process: PID 1 of the pod, it sleeps until
 * SIGINT/SIGTERM and reaps orphaned children, like Kubernetes' own pause. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }
static void on_chld(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
  struct sigaction term, chld;
  memset(&term, 0, sizeof term); term.sa_handler = on_term;
  memset(&chld, 0, sizeof chld); chld.sa_handler = on_chld; chld.sa_flags = SA_NOCLDSTOP;
  if (sigaction(SIGINT, &term, NULL) || sigaction(SIGTERM, &term, NULL) || sigaction(SIGCHLD, &chld, NULL))
    return 1;
  for (;;) pause();
}
