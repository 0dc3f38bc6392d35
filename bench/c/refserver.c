/* refserver: the C epoll reference for bench/throughput.
 *
 * Does the job every server in the benchmark does: over TCP, answer each line
 * upper-cased (ASCII letters) for as long as the client keeps the connection
 * open; over UDP (--udp), answer each datagram upper-cased.  A line longer than
 * 64 KiB is answered in pieces, as portico's built-in handler does.
 *
 * One thread, one epoll set, level-triggered.  A connection costs a 32-byte
 * slot in an array indexed by descriptor (48 in a TLS build), plus heap memory
 * only while it holds a partial line or unsent output (and its TLS session).
 * Reads go to one shared buffer.
 *
 * After handling events it polls epoll without blocking for --spin-us
 * microseconds (default 200) before it sleeps.  On loopback the client's CPU
 * runs the server's side of each handshake and pays for waking a sleeping
 * server (on a VM, an IPI to a halted vCPU): a server that is awake whenever
 * load comes costs the load generator less.  Under load it never sleeps;
 * idle, it sleeps.  --spin-us 0 turns this off.
 *
 * With --certfile (and --keyfile, else the key is in the certfile) it serves
 * the same job over TLS with OpenSSL's libssl, set up as portico's TLSConfig
 * sets Python's ssl: TLS 1.2 at least, no compression, the server's cipher
 * order, OpenSSL's default ciphers and session tickets.  The handshake runs in
 * the event loop, non-blocking; TLS reads ahead (one read() for what the socket
 * holds).  That needs a build with -DWITH_TLS -lssl -lcrypto (libssl-dev);
 * without it --certfile says so and exits 2.
 *
 *   refserver --port N [--host 127.0.0.1] [--udp] [--spin-us N]
 *             [--certfile PEM [--keyfile PEM]]
 *
 * Prints "listening on PORT" once the socket listens (useful with --port 0).
 * Runs until killed.  Build: cc -O2 -o refserver refserver.c  (Linux only)
 *   with TLS: cc -O2 -DWITH_TLS -o refserver-tls refserver.c -lssl -lcrypto
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifdef WITH_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

#define MAX_LINE (64 * 1024)
#define SCRATCH_SIZE (MAX_LINE + 256 * 1024)
#define MAX_EVENTS 256
#define UDP_BATCH 32
#define UDP_MAX 65536

typedef struct {
    char *pending;     /* a partial line, waiting for its newline */
    uint32_t pending_len;
    char *out;         /* replies the socket did not take yet */
    uint32_t out_len, out_off;
#ifdef WITH_TLS
    SSL *ssl;          /* --certfile: the connection's TLS session */
    bool handshaken;
#endif
} conn;

static int epfd;
static conn *conns;    /* indexed by descriptor */
static size_t max_fds;
static char scratch[SCRATCH_SIZE];
#ifdef WITH_TLS
static SSL_CTX *ssl_ctx; /* NULL: plaintext */
#endif

/* Branch-free, so that the compiler vectorizes it: 16 KiB lines are common here. */
static void upper(char *p, size_t n) {
    unsigned char *u = (unsigned char *)p;
    for (size_t i = 0; i < n; i++) u[i] -= (unsigned char)((unsigned char)(u[i] - 'a') < 26) << 5;
}

static void watch(int fd, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(epfd, op, fd, &ev) != 0) perror("refserver: epoll_ctl");
}

static void drop(int fd) {
    conn *c = &conns[fd];
#ifdef WITH_TLS
    if (c->ssl) SSL_free(c->ssl);
    ERR_clear_error();
#endif
    free(c->pending);
    free(c->out);
    memset(c, 0, sizeof *c);
    close(fd);
}

/* Keep `n` bytes the socket did not take; stop reading until they are sent. */
static bool keep_output(int fd, const char *data, size_t n) {
    conn *c = &conns[fd];
    c->out = malloc(n);
    if (!c->out) return false;
    memcpy(c->out, data, n);
    c->out_len = (uint32_t)n;
    c->out_off = 0;
    watch(fd, EPOLLOUT, EPOLL_CTL_MOD);
    return true;
}

/* send(), or SSL_write() over TLS: -1 with errno EAGAIN when the socket is full. */
static ssize_t out_send(int fd, const char *data, size_t n) {
#ifdef WITH_TLS
    SSL *ssl = conns[fd].ssl;
    if (ssl) {
        ERR_clear_error();
        int w = SSL_write(ssl, data, (int)n);
        if (w > 0) return w;
        int e = SSL_get_error(ssl, w);
        errno = (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) ? EAGAIN : EPIPE;
        return -1;
    }
#endif
    return send(fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* Send, keeping what the socket does not take; false when the peer is gone.  (TLS
 * retries a write that did not go with the same bytes: the kept ones.) */
static bool reply(int fd, const char *data, size_t n) {
    size_t sent = 0;
    while (sent < n) {
        ssize_t w = out_send(fd, data + sent, n - sent);
        if (w > 0) {
            sent += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return keep_output(fd, data + sent, n - sent);
        } else {
            return false;
        }
    }
    return true;
}

static bool keep_pending(conn *c, const char *data, size_t n) {
    if (n == 0) {
        free(c->pending);
        c->pending = NULL;
        c->pending_len = 0;
        return true;
    }
    char *p = realloc(c->pending, n);
    if (!p) return false;
    memcpy(p, data, n);
    c->pending = p;
    c->pending_len = (uint32_t)n;
    return true;
}

/* scratch holds the pending partial line (`have` bytes), then what was just read, up to
 * `total`: answer the complete lines, keep the partial one; false when dropped. */
static bool answer(int fd, size_t have, size_t total) {
    conn *c = &conns[fd];
    size_t end = 0;
    char *last = memrchr(scratch + have, '\n', total - have);
    if (last) end = (size_t)(last - scratch) + 1;
    else if (total >= MAX_LINE) end = total; /* too long: answer this piece now */
    upper(scratch, end);
    if (!reply(fd, scratch, end) || !keep_pending(c, scratch + end, total - end)) {
        drop(fd);
        return false;
    }
    return true;
}

#ifdef WITH_TLS
/* Over TLS: the handshake first, then read until TLS wants more from the socket
 * (records it already holds raise no epoll event), answering as for plaintext.
 * A client's close_notify is answered with ours. */
static void on_readable_tls(int fd) {
    conn *c = &conns[fd];
    if (!c->handshaken) {
        ERR_clear_error();
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ) return;
            if (e == SSL_ERROR_WANT_WRITE) watch(fd, EPOLLOUT, EPOLL_CTL_MOD);
            else drop(fd); /* a failed handshake */
            return;
        }
        c->handshaken = true;
    }
    while (!c->out) { /* while replies wait for the socket, read nothing more */
        size_t have = c->pending_len, total = have;
        if (have) memcpy(scratch, c->pending, have);
        int e = SSL_ERROR_NONE;
        while (total < SCRATCH_SIZE) {
            ERR_clear_error();
            int r = SSL_read(c->ssl, scratch + total, (int)(SCRATCH_SIZE - total));
            if (r <= 0) {
                e = SSL_get_error(c->ssl, r);
                break;
            }
            total += (size_t)r;
        }
        if (total > have && !answer(fd, have, total)) return;
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
        if (e != SSL_ERROR_NONE) { /* the end: close_notify (answered), EOF or an error */
            if (e == SSL_ERROR_ZERO_RETURN && !c->out) SSL_shutdown(c->ssl);
            drop(fd);
            return;
        }
    }
}
#endif

/* Read once; answer the complete lines; keep the partial one. */
static void on_readable(int fd) {
    conn *c = &conns[fd];
#ifdef WITH_TLS
    if (c->ssl) {
        on_readable_tls(fd);
        return;
    }
#endif
    size_t have = c->pending_len;
    if (have) memcpy(scratch, c->pending, have);
    ssize_t n = recv(fd, scratch + have, SCRATCH_SIZE - have, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) {
        drop(fd);
        return;
    }
    answer(fd, have, have + (size_t)n);
}

static void on_writable(int fd) {
    conn *c = &conns[fd];
#ifdef WITH_TLS
    if (c->ssl && !c->handshaken) { /* the handshake's flight did not fit: go on with it */
        watch(fd, EPOLLIN, EPOLL_CTL_MOD);
        on_readable_tls(fd);
        return;
    }
#endif
    while (c->out_off < c->out_len) {
        ssize_t w = out_send(fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w > 0) {
            c->out_off += (uint32_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else {
            drop(fd);
            return;
        }
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    watch(fd, EPOLLIN, EPOLL_CTL_MOD);
#ifdef WITH_TLS
    if (c->ssl) on_readable_tls(fd); /* records TLS read ahead raise no epoll event */
#endif
}

static void on_listener(int lfd) {
    for (int i = 0; i < 64; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                errno != ECONNABORTED)
                perror("refserver: accept4");
            return;
        }
        if ((size_t)fd >= max_fds) {
            close(fd);
            continue;
        }
#ifdef WITH_TLS
        if (ssl_ctx) {
            SSL *ssl = SSL_new(ssl_ctx);
            if (!ssl || SSL_set_fd(ssl, fd) != 1) {
                SSL_free(ssl);
                close(fd);
                continue;
            }
            SSL_set_accept_state(ssl);
            conns[fd].ssl = ssl;
            /* TLS writes what one reply needs in more than one send (the session
             * tickets, then the reply): without TCP_NODELAY, Nagle would hold the
             * reply until the client ACKs the tickets (a delayed ACK: 40 ms).
             * asyncio and uvloop set it on every connection. */
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
#endif
        watch(fd, EPOLLIN, EPOLL_CTL_ADD);
    }
}

static void on_datagrams(int fd) {
    static char bufs[UDP_BATCH][UDP_MAX];
    struct mmsghdr msgs[UDP_BATCH];
    struct iovec iovs[UDP_BATCH];
    struct sockaddr_storage addrs[UDP_BATCH];
    for (;;) {
        for (int i = 0; i < UDP_BATCH; i++) {
            iovs[i] = (struct iovec){.iov_base = bufs[i], .iov_len = UDP_MAX};
            msgs[i].msg_hdr = (struct msghdr){.msg_name = &addrs[i],
                                              .msg_namelen = sizeof addrs[i],
                                              .msg_iov = &iovs[i],
                                              .msg_iovlen = 1};
        }
        int n = recvmmsg(fd, msgs, UDP_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) return;
        for (int i = 0; i < n; i++) {
            upper(bufs[i], msgs[i].msg_len);
            iovs[i].iov_len = msgs[i].msg_len;
        }
        for (int done = 0; done < n;) {
            int w = sendmmsg(fd, msgs + done, (unsigned)(n - done), MSG_DONTWAIT);
            if (w <= 0) break; /* datagrams may be dropped, as UDP allows */
            done += w;
        }
        if (n < UDP_BATCH) return;
    }
}

static int open_socket(const char *host, int port, bool udp) {
    int fd = socket(AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) return -1;
    if (!udp) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "refserver: --host must be an IPv4 address\n");
        exit(2);
    }
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) return -1;
    if (!udp && listen(fd, SOMAXCONN) != 0) return -1;
    socklen_t len = sizeof addr;
    getsockname(fd, (struct sockaddr *)&addr, &len);
    printf("listening on %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    return fd;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    max_fds = rl.rlim_cur > 1048576 ? 1048576 : rl.rlim_cur;
}

#ifdef WITH_TLS
/* A server context as portico's TLSConfig makes one; exits on a broken file. */
static void tls_setup(const char *certfile, const char *keyfile) {
    ssl_ctx = SSL_CTX_new(TLS_server_method());
    if (!ssl_ctx) goto failed;
    SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ssl_ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(ssl_ctx, 1);
    if (SSL_CTX_use_certificate_chain_file(ssl_ctx, certfile) != 1 ||
        SSL_CTX_use_PrivateKey_file(ssl_ctx, keyfile ? keyfile : certfile, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ssl_ctx) != 1)
        goto failed;
    return;
failed:
    fprintf(stderr, "refserver: TLS: %s\n", ERR_error_string(ERR_get_error(), NULL));
    exit(2);
}
#endif

int main(int argc, char **argv) {
    static const struct option longs[] = {{"host", 1, 0, 'h'}, {"port", 1, 0, 'p'},
                                           {"udp", 0, 0, 'u'}, {"spin-us", 1, 0, 's'},
                                           {"certfile", 1, 0, 'c'}, {"keyfile", 1, 0, 'k'},
                                           {0, 0, 0, 0}};
    const char *host = "127.0.0.1", *certfile = NULL, *keyfile = NULL;
    int port = -1, c;
    long spin_us = 200;
    bool udp = false;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        if (c == 'h') host = optarg;
        else if (c == 'p') port = atoi(optarg);
        else if (c == 'u') udp = true;
        else if (c == 's') spin_us = atol(optarg);
        else if (c == 'c') certfile = optarg;
        else if (c == 'k') keyfile = optarg;
        else port = -2;
    }
    if (port < 0 || port > 65535 || spin_us < 0 || (keyfile && !certfile) || (certfile && udp)) {
        fprintf(stderr, "usage: refserver --port N [--host 127.0.0.1] [--udp] [--spin-us N]\n"
                        "                 [--certfile PEM [--keyfile PEM]]  (TLS: not with --udp)\n");
        return 2;
    }
    if (certfile) {
#ifdef WITH_TLS
        tls_setup(certfile, keyfile);
#else
        fprintf(stderr, "refserver: --certfile: this build has no TLS (build it with -DWITH_TLS "
                        "-lssl -lcrypto; needs libssl-dev)\n");
        return 2;
#endif
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    conns = calloc(max_fds, sizeof(conn));
    epfd = epoll_create1(EPOLL_CLOEXEC);
    int lfd = open_socket(host, port, udp);
    if (lfd < 0 || !conns || epfd < 0) {
        perror("refserver");
        return 1;
    }
    watch(lfd, EPOLLIN, EPOLL_CTL_ADD);
    struct epoll_event events[MAX_EVENTS];
    uint64_t spin_ns = (uint64_t)spin_us * 1000, busy_until = 0;
    for (;;) {
        bool spin = spin_ns && now_ns() < busy_until;
        int n = epoll_wait(epfd, events, MAX_EVENTS, spin ? 0 : -1);
        if (n > 0 && spin_ns) busy_until = now_ns() + spin_ns;
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                if (udp) on_datagrams(fd);
                else on_listener(fd);
            } else if (events[i].events & EPOLLOUT) {
                on_writable(fd);
            } else {
                on_readable(fd);
            }
        }
    }
}
