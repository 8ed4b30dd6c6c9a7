/* Files: whole reads, read-only mappings, atomic writes, path checks. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base.h"

/* path opened read-only, when it is a regular file (a FIFO or a device would
 * block or never end). O_NONBLOCK keeps the open itself from waiting for a
 * FIFO's writer; reads of a regular file ignore it, but it is cleared anyway. */
static mopt_status open_regular(const char *path, int *fd, size_t *size, mopt_error *err) {
    struct stat st;
    *size = 0;
    *fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (*fd < 0) return MOPT_FAIL(err, MOPT_E_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(*fd, &st) != 0 || !S_ISREG(st.st_mode) || fcntl(*fd, F_SETFL, fcntl(*fd, F_GETFL) & ~O_NONBLOCK) != 0) {
        close(*fd);
        *fd = -1;
        return MOPT_FAIL(err, MOPT_E_IO, "%s: not a regular file", path);
    }
    *size = (size_t)st.st_size;
    return MOPT_OK;
}

mopt_status mopt_read_file(const char *path, char **data, size_t *len, mopt_error *err) {
    *data = NULL;
    *len = 0;
    int fd;
    size_t size;
    mopt_status ost = open_regular(path, &fd, &size, err);
    if (ost) return ost;
    char *buf = malloc(size + 1);
    if (!buf) {
        close(fd);
        return MOPT_FAIL(err, MOPT_E_NOMEM, "%s: cannot allocate %zu bytes", path, size + 1);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            const int e = r < 0 ? errno : 0;
            free(buf);
            close(fd);
            return MOPT_FAIL(err, MOPT_E_IO, "%s: read failed after %zu of %zu bytes: %s", path, got, size,
                             e ? strerror(e) : "the file shrank while being read");
        }
        got += (size_t)r;
    }
    close(fd);
    buf[size] = '\0';
    *data = buf;
    *len = size;
    return MOPT_OK;
}

mopt_status mopt_map_file(const char *path, void **base, size_t *size, mopt_error *err) {
    *base = NULL;
    size_t n;
    int fd;
    mopt_status ost = open_regular(path, &fd, &n, err);
    *size = 0;
    if (ost) return ost;
    if (n > 0) {
        void *p = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            const int e = errno;
            close(fd);
            return MOPT_FAIL(err, MOPT_E_IO, "%s: mmap failed: %s", path, strerror(e));
        }
        *base = p;
    }
    *size = n;
    close(fd);
    return MOPT_OK;
}

void mopt_unmap_file(void *base, size_t size) {
    if (base) munmap(base, size);
}

int mopt_file_starts_with(const char *path, const void *magic, size_t n) {
    int fd;
    size_t size;
    if (open_regular(path, &fd, &size, NULL)) return 0;
    char buf[16];
    const int yes = n <= sizeof buf && n <= size && read(fd, buf, n) == (ssize_t)n && !memcmp(buf, magic, n);
    close(fd);
    return yes;
}

int mopt_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int mopt_dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

char *mopt_path_join(char *out, size_t cap, const char *dir, const char *name) {
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) return NULL;
    return out;
}

int mopt_mul_overflows(uint64_t a, uint64_t b, uint64_t *out) {
    return __builtin_mul_overflow(a, b, out);
}

int mopt_write_all(int fd, const void *data, size_t n, int64_t off) {
    const char *p = data;
    while (n) {
        ssize_t w = off < 0 ? write(fd, p, n) : pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return w < 0 ? errno : ENOSPC; /* a write of nothing: the disk is full */
        p += w;
        n -= (size_t)w;
        if (off >= 0) off += w;
    }
    return 0;
}

mopt_status mopt_file_write_atomic(const char *path, const void *data, size_t n, mopt_error *err) {
    struct stat st;
    if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        /* a device or FIFO the user named (--json /dev/stdout): write to it, never replace it */
        if (!S_ISCHR(st.st_mode) && !S_ISFIFO(st.st_mode))
            return MOPT_FAIL(err, MOPT_E_INVALID, "%s is %s; refusing to replace it", path,
                             S_ISLNK(st.st_mode) ? "a symbolic link" : S_ISDIR(st.st_mode) ? "a directory" : "not a regular file");
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        int e = fd < 0 ? errno : mopt_write_all(fd, data, n, -1);
        if (fd >= 0) close(fd);
        return e ? MOPT_FAIL(err, MOPT_E_IO, "%s: cannot write: %s", path, strerror(e)) : MOPT_OK;
    }
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.mopt-tmp-%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return MOPT_FAIL(err, MOPT_E_INVALID, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) return MOPT_FAIL(err, MOPT_E_IO, "%s: cannot write: %s", path, strerror(errno));
    int e = mopt_write_all(fd, data, n, -1);
    if (!e && fsync(fd) != 0) e = errno;
    if (close(fd) != 0 && !e) e = errno;
    if (!e && rename(tmp, path) != 0) e = errno;
    if (e) {
        unlink(tmp);
        return MOPT_FAIL(err, MOPT_E_IO, "%s: cannot write: %s", path, strerror(e));
    }
    /* the rename itself reaches the disk with its directory */
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return MOPT_OK;
}

mopt_status mopt_path_check_within(const char *root, const char *path, mopt_error *err) {
    char r[4096], d[4096], tmp[4096];
    if (!realpath(root, r)) return MOPT_FAIL(err, MOPT_E_IO, "%s: cannot resolve the output directory: %s", root, strerror(errno));
    snprintf(tmp, sizeof tmp, "%s", path);
    char *slash = strrchr(tmp, '/');
    const char *base = slash ? slash + 1 : tmp;
    if (slash == tmp) snprintf(tmp, sizeof tmp, "/");
    else if (slash) *slash = '\0';
    else snprintf(tmp, sizeof tmp, ".");
    if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
        return MOPT_FAIL(err, MOPT_E_INVALID, "%s: not a file name inside %s (sandbox)", path, root);
    if (!realpath(tmp, d)) return MOPT_FAIL(err, MOPT_E_IO, "%s: its directory does not exist: %s", path, strerror(errno));
    const size_t n = strlen(r);
    if (strncmp(d, r, n) || (d[n] && d[n] != '/' && strcmp(r, "/")))
        return MOPT_FAIL(err, MOPT_E_INVALID, "%s: writing outside %s is not allowed in the sandbox", path, r);
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
        return MOPT_FAIL(err, MOPT_E_INVALID, "%s: is a symbolic link; the sandbox does not write through links", path);
    return MOPT_OK;
}
