/* Atomic exports (see atomic_dir.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic_dir.h"
#include "mopt/mopt.h"

/* --- removal that never follows a link or leaves the file system ----------------- */

/* Empties the directory open as fd: links, files and FIFOs are unlinked
 * themselves, subdirectories are entered only when they sit on `dev` and are
 * still the directory that was looked at. Returns 0 when all of it went. */
static int clear_dir(int fd, dev_t dev, int depth) {
    if (depth > 64) return -1;
    int dfd = dup(fd);
    DIR *dir = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!dir) {
        if (dfd >= 0) close(dfd);
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        struct stat st;
        if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            rc = -1;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            rc |= unlinkat(fd, e->d_name, 0);
            continue;
        }
        if (st.st_dev != dev) { /* a mount point: not ours to empty */
            rc = -1;
            continue;
        }
        int sub = openat(fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        struct stat ss;
        if (sub < 0 || fstat(sub, &ss) != 0 || ss.st_dev != st.st_dev || ss.st_ino != st.st_ino) {
            if (sub >= 0) close(sub);
            rc = -1;
            continue;
        }
        rc |= clear_dir(sub, dev, depth + 1);
        close(sub);
        rc |= unlinkat(fd, e->d_name, AT_REMOVEDIR);
    }
    closedir(dir);
    return rc ? -1 : 0;
}

/* Removes the directory at path and everything in it; a path that is a link
 * (or anything but a directory) is left alone. */
static int remove_tree(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat st;
    int rc = fstat(fd, &st) == 0 ? clear_dir(fd, st.st_dev, 0) : -1;
    close(fd);
    return rc | rmdir(path);
}

static int fsync_path(const char *path, int flags) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | flags);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* --- names --------------------------------------------------------------------- */

static void parent_of(const char *target, char *dir, size_t cap) {
    char a[4096];
    snprintf(a, sizeof a, "%s", target);
    snprintf(dir, cap, "%s", dirname(a));
}

/* ".NAME.mopt-KIND-" for temporaries (tmp) and previous exports moved aside (old) */
static void hidden_prefix(const char *target, const char *kind, char *prefix, size_t cap) {
    char b[4096];
    snprintf(b, sizeof b, "%s", target);
    snprintf(prefix, cap, ".%s.mopt-%s-", basename(b), kind);
}

static int is_file_in(int dfd, const char *name) {
    struct stat st;
    return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

/* a real directory holding `marker` as a regular file */
static int dir_has_marker(const char *path, const char *marker) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return 0;
    int yes = is_file_in(fd, marker);
    close(fd);
    return yes;
}

static int pid_alive(long pid) { return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM); }

/* Leftovers of earlier runs for this target: temporaries and moved-aside
 * exports of processes that are gone, owned by us, real directories with
 * mopt's own marker. A moved-aside export comes back when no new one landed. */
static void sweep(const char *dir, const char *target) {
    char tmp_prefix[512], old_prefix[512];
    hidden_prefix(target, "tmp", tmp_prefix, sizeof tmp_prefix);
    hidden_prefix(target, "old", old_prefix, sizeof old_prefix);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dd = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!dd) {
        if (dfd >= 0) close(dfd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(dd))) {
        const int is_tmp = !strncmp(e->d_name, tmp_prefix, strlen(tmp_prefix));
        const int is_old = !strncmp(e->d_name, old_prefix, strlen(old_prefix));
        if (!is_tmp && !is_old) continue;
        char *end;
        const long pid = strtol(e->d_name + strlen(is_tmp ? tmp_prefix : old_prefix), &end, 10);
        struct stat st;
        if (*end || pid_alive(pid) || fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode) ||
            st.st_uid != geteuid())
            continue;
        char p[5000];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (is_tmp && dir_has_marker(p, MOPT_INCOMPLETE_MARKER)) {
            remove_tree(p);
        } else if (is_old && dir_has_marker(p, MOPT_EXPORT_MARKER)) {
            struct stat ts;
            if (lstat(target, &ts) != 0 && errno == ENOENT) rename(p, target); /* interrupted between the two renames */
            else remove_tree(p);
        }
    }
    closedir(dd);
}

/* --- the export ------------------------------------------------------------------ */

/* Whether force may replace what is at the target now. */
static mopt_status replaceable(const mopt_host_api *h, const atomic_dir *d, mopt_error *err) {
    struct stat st;
    if (lstat(d->target, &st) != 0) return MOPT_OK;
    if (S_ISLNK(st.st_mode))
        return h->error_set(err, MOPT_E_INVALID, "export", "%s is a symbolic link; mopt replaces only a real previous export (give the path it points to, or remove the link)",
                            d->target);
    if (d->single_file) {
        if (S_ISDIR(st.st_mode)) return h->error_set(err, MOPT_E_INVALID, "export", "%s is a directory; this export is one file", d->target);
        if (!S_ISREG(st.st_mode))
            return h->error_set(err, MOPT_E_INVALID, "export", "%s is not a regular file (a device, FIFO or socket); refusing to replace it", d->target);
        return MOPT_OK;
    }
    if (!S_ISDIR(st.st_mode)) return h->error_set(err, MOPT_E_INVALID, "export", "%s is a file; this export is a directory", d->target);
    if (!dir_has_marker(d->target, MOPT_EXPORT_MARKER))
        return h->error_set(err, MOPT_E_INVALID, "export",
                            "%s exists and is not a mopt export (no %s inside); refusing to replace it: remove it yourself or choose another -o",
                            d->target, MOPT_EXPORT_MARKER);
    return MOPT_OK;
}

mopt_status atomic_dir_begin(const mopt_host_api *h, const mopt_pass_ctx *ctx, atomic_dir *d, const char *target, int force,
                             int single_file, mopt_error *err) {
    size_t tl = strlen(target);
    while (tl > 1 && target[tl - 1] == '/') tl--;
    d->tmp[0] = '\0';
    if (!tl || tl >= sizeof d->target) return h->error_set(err, MOPT_E_INVALID, "export", "the output path is empty or too long");
    snprintf(d->target, sizeof d->target, "%.*s", (int)tl, target);
    mopt_status s0 = h->ctx_check_write(ctx, d->target, err);
    if (s0) return s0;
    d->force = force;
    d->single_file = single_file;
    struct stat st;
    if (lstat(d->target, &st) == 0 && !force)
        return h->error_set(err, MOPT_E_INVALID, "export", "%s already exists; pass force (--force) to replace it", d->target);
    mopt_status s = replaceable(h, d, err);
    if (s) return s;
    char dir[4096], prefix[512];
    parent_of(d->target, dir, sizeof dir);
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return h->error_set(err, MOPT_E_IO, "export", "%s: the parent directory does not exist", dir);
    sweep(dir, d->target);
    hidden_prefix(d->target, "tmp", prefix, sizeof prefix);
    snprintf(d->tmp, sizeof d->tmp, "%s/%s%ld", dir, prefix, (long)getpid());
    if (mkdir(d->tmp, 0755) != 0) {
        int e = errno;
        d->tmp[0] = '\0';
        return h->error_set(err, MOPT_E_IO, "export", "%s: cannot create a directory beside it: %s", d->target, strerror(e));
    }
    return atomic_dir_write(h, d, MOPT_INCOMPLETE_MARKER, "export in progress\n", 19, err);
}

const char *atomic_dir_path(const atomic_dir *d, const char *name, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s", d->tmp, name);
    return buf;
}

mopt_status atomic_dir_write(const mopt_host_api *h, const atomic_dir *d, const char *name, const void *data, size_t n,
                             mopt_error *err) {
    char p[5000];
    atomic_dir_path(d, name, p, sizeof p);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) return h->error_set(err, MOPT_E_IO, "export", "%s: cannot write: %s", p, strerror(errno));
    const char *c = data;
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, c + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = w < 0 ? errno : ENOSPC;
            close(fd);
            return h->error_set(err, MOPT_E_IO, "export", "%s: write failed: %s", p, strerror(e));
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return h->error_set(err, MOPT_E_IO, "export", "%s: cannot flush: %s", p, strerror(e));
    }
    if (close(fd) != 0) return h->error_set(err, MOPT_E_IO, "export", "%s: cannot close: %s", p, strerror(errno));
    return MOPT_OK;
}

/* rename that never replaces: the target must not have appeared meanwhile */
static int rename_new(const char *from, const char *to) {
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return -1;
    struct stat st; /* a file system without RENAME_NOREPLACE: check, then rename */
    if (lstat(to, &st) == 0) return errno = EEXIST, -1;
    return rename(from, to);
}

mopt_status atomic_dir_commit(const mopt_host_api *h, atomic_dir *d, mopt_error *err) {
    char path[5000], old[5000], dir[4096], prefix[512];
    char stamp[128];
    snprintf(stamp, sizeof stamp, "{\"written_by\": \"mopt %s\"}\n", MOPT_VERSION_STRING);
    mopt_status st = atomic_dir_write(h, d, MOPT_EXPORT_MARKER, stamp, strlen(stamp), err);
    if (st) return st;
    unlink(atomic_dir_path(d, MOPT_INCOMPLETE_MARKER, path, sizeof path));
    if (fsync_path(d->tmp, O_DIRECTORY) != 0)
        return h->error_set(err, MOPT_E_IO, "export", "%s: cannot flush: %s", d->tmp, strerror(errno));
    parent_of(d->target, dir, sizeof dir);
    struct stat ts;
    const int replacing = lstat(d->target, &ts) == 0;
    if (replacing) { /* move the old export aside first, so a failure never loses both */
        if (!d->force)
            return h->error_set(err, MOPT_E_INVALID, "export", "%s appeared while exporting; pass force (--force) to replace it", d->target);
        if ((st = replaceable(h, d, err))) return st;
        hidden_prefix(d->target, "old", prefix, sizeof prefix);
        snprintf(old, sizeof old, "%s/%s%ld", dir, prefix, (long)getpid());
        if (rename(d->target, old) != 0)
            return h->error_set(err, MOPT_E_IO, "export", "%s: cannot move the old export aside: %s", d->target, strerror(errno));
    }
    if (rename_new(d->tmp, d->target) != 0) {
        int e = errno;
        if (replacing) rename(old, d->target);
        if (e == EEXIST || e == ENOTEMPTY)
            return h->error_set(err, MOPT_E_INVALID, "export", "%s appeared while exporting (another export?); nothing was replaced", d->target);
        return h->error_set(err, MOPT_E_IO, "export", "%s: cannot rename into place: %s", d->target, strerror(e));
    }
    d->tmp[0] = '\0';
    fsync_path(dir, O_DIRECTORY);
    if (replacing) remove_tree(old);
    return MOPT_OK;
}

mopt_status atomic_dir_commit_file(const mopt_host_api *h, atomic_dir *d, const char *name, mopt_error *err) {
    char p[5000], dir[4096];
    atomic_dir_path(d, name, p, sizeof p);
    if (fsync_path(p, 0) != 0) return h->error_set(err, MOPT_E_IO, "export", "%s: cannot flush: %s", p, strerror(errno));
    struct stat ts;
    int rc;
    if (lstat(d->target, &ts) == 0) {
        mopt_status st = d->force ? replaceable(h, d, err)
                                  : h->error_set(err, MOPT_E_INVALID, "export", "%s appeared while exporting; pass force (--force) to replace it", d->target);
        if (st) return st;
        rc = rename(p, d->target); /* atomic over the old file */
    } else {
        rc = rename_new(p, d->target);
    }
    if (rc != 0) return h->error_set(err, MOPT_E_IO, "export", "%s: cannot rename into place: %s", d->target, strerror(errno));
    parent_of(d->target, dir, sizeof dir);
    fsync_path(dir, O_DIRECTORY);
    atomic_dir_abort(d);
    return MOPT_OK;
}

void atomic_dir_abort(atomic_dir *d) {
    if (d->tmp[0]) remove_tree(d->tmp);
    d->tmp[0] = '\0';
}

mopt_status atomic_dir_end(const mopt_host_api *h, atomic_dir *d, const char *file, mopt_status st, mopt_error *err) {
    if (!st) st = file ? atomic_dir_commit_file(h, d, file, err) : atomic_dir_commit(h, d, err);
    if (st) atomic_dir_abort(d);
    return st;
}
