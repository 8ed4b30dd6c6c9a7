/* Atomic directory writes (see atomic_dir.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic_dir.h"

static void rm_rf(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[4400];
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) rm_rf(p);
            else unlink(p);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* ".NAME.mopt-tmp-" in the target's parent directory */
static void tmp_prefix(const char *target, char *dir, size_t dcap, char *prefix, size_t pcap) {
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s", target);
    snprintf(b, sizeof b, "%s", target);
    snprintf(dir, dcap, "%s", dirname(a));
    snprintf(prefix, pcap, ".%s.mopt-tmp-", basename(b));
}

mopt_status atomic_dir_begin(const mopt_host_api *h, atomic_dir *d, const char *target, int force, mopt_error *err) {
    size_t tl = strlen(target);
    while (tl > 1 && target[tl - 1] == '/') tl--;
    snprintf(d->target, sizeof d->target, "%.*s", (int)tl, target);
    struct stat st;
    if (stat(d->target, &st) == 0 && !force)
        return h->error_set(err, MOPT_E_INVALID, "export", "%s already exists; pass force (--force) to replace it", d->target);
    char dir[4096], prefix[512];
    tmp_prefix(d->target, dir, sizeof dir, prefix, sizeof prefix);
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return h->error_set(err, MOPT_E_IO, "export", "%s: the parent directory does not exist", dir);
    /* leftovers of interrupted exports of this target */
    DIR *dd = opendir(dir);
    struct dirent *e;
    while (dd && (e = readdir(dd))) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0) continue;
        char p[4400];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        rm_rf(p);
    }
    if (dd) closedir(dd);
    snprintf(d->tmp, sizeof d->tmp, "%s/%s%ld", dir, prefix, (long)getpid());
    if (mkdir(d->tmp, 0755) != 0) return h->error_set(err, MOPT_E_IO, "export", "%s: cannot create: %s", d->tmp, strerror(errno));
    return atomic_dir_write(h, d, MOPT_INCOMPLETE_MARKER, "export in progress\n", 19, err);
}

const char *atomic_dir_path(const atomic_dir *d, const char *name, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s", d->tmp, name);
    return buf;
}

mopt_status atomic_dir_write(const mopt_host_api *h, const atomic_dir *d, const char *name, const void *data, size_t n,
                             mopt_error *err) {
    char p[4400];
    atomic_dir_path(d, name, p, sizeof p);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return h->error_set(err, MOPT_E_IO, "export", "%s: cannot write: %s", p, strerror(errno));
    const char *c = data;
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, c + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            close(fd);
            return h->error_set(err, MOPT_E_IO, "export", "%s: write failed: %s", p, strerror(errno));
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) return h->error_set(err, MOPT_E_IO, "export", "%s: cannot flush", p);
    return MOPT_OK;
}

mopt_status atomic_dir_commit(const mopt_host_api *h, atomic_dir *d, mopt_error *err) {
    char marker[4400], old[4400];
    unlink(atomic_dir_path(d, MOPT_INCOMPLETE_MARKER, marker, sizeof marker));
    struct stat st;
    int replacing = stat(d->target, &st) == 0;
    if (replacing) { /* move the old target aside first, so a failure never loses both */
        snprintf(old, sizeof old, "%s.mopt-old-%ld", d->target, (long)getpid());
        if (rename(d->target, old) != 0)
            return h->error_set(err, MOPT_E_IO, "export", "%s: cannot move the old export aside: %s", d->target, strerror(errno));
    }
    if (rename(d->tmp, d->target) != 0) {
        int e = errno;
        if (replacing) rename(old, d->target);
        return h->error_set(err, MOPT_E_IO, "export", "%s: cannot rename into place: %s", d->target, strerror(e));
    }
    if (replacing) rm_rf(old);
    return MOPT_OK;
}

mopt_status atomic_dir_commit_file(const mopt_host_api *h, atomic_dir *d, const char *name, mopt_error *err) {
    char p[4400];
    struct stat st;
    if (stat(d->target, &st) == 0 && S_ISDIR(st.st_mode))
        return h->error_set(err, MOPT_E_INVALID, "export", "%s is a directory; the export is one file", d->target);
    if (rename(atomic_dir_path(d, name, p, sizeof p), d->target) != 0) /* atomic, also over an old file */
        return h->error_set(err, MOPT_E_IO, "export", "%s: cannot rename into place: %s", d->target, strerror(errno));
    rm_rf(d->tmp);
    return MOPT_OK;
}

void atomic_dir_abort(atomic_dir *d) { rm_rf(d->tmp); }
