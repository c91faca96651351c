/* Stands in for the driver's other programs (nvidia-debugdump, nvidia-persistenced, ...):
 * a real dynamically linked ELF that prints the name it was installed under. */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    const char *name;

    if (n < 0)
        return 1;
    self[n] = '\0';
    name = strrchr(self, '/');
    printf("%s (fake NVIDIA driver)\n", name ? name + 1 : self);
    return 0;
}
