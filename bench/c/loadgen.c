/* loadgen: a single-threaded epoll load generator for bench/throughput.
 *
 * Every request is a line of --size bytes (a header carrying the connection
 * and request numbers, lower-case filler, '\n'); every reply must be that line
 * upper-cased, byte for byte.  Modes:
 *
 *   oneshot   --conns slots, each: connect, send one line, read the reply, close
 *   pingpong  --conns persistent connections, one line in flight on each;
 *             --idle N first opens N more connections, checks one line on each,
 *             then leaves them idle for the rest of the run
 *   udp       --conns connected UDP sockets, one datagram in flight on each
 *   bulk      one connection streaming --bulk-bytes of lines, replies read as
 *             they come (at most --window bytes unanswered)
 *   tls-oneshot   oneshot over TLS: connect, a full TLS handshake (no session is
 *             ever resumed), one line, the reply, close_notify, close
 *   tls-pingpong  pingpong over TLS: persistent TLS connections, one line in
 *             flight on each
 *
 * TLS (OpenSSL's libssl) is compiled in with -DWITH_TLS -lssl -lcrypto; without
 * it the tls-* modes say so and exit 2.  The client offers TLS 1.2 and 1.3 with
 * OpenSSL's defaults, sends --sni as the server name, does not verify the
 * server's certificate chain (the server's work is the same either way; the
 * harness's readiness probe verifies it), keeps no session cache and never
 * offers a session, so every handshake is a full one (the result counts those
 * that were resumed: 0).  The result says which version, cipher and key
 * exchange group were negotiated.
 * Timeline: setup (connections; bounded by --setup-timeout), --warmup seconds
 * not counted, --duration seconds measured, then a drain (no new requests;
 * in-flight ones may finish).  Loops are bounded by time and by --max-requests.
 * The result is one JSON object on stdout; diagnostics go to stderr.  With
 * --server-pid it also reports the server's CPU use over the measured window
 * (--server-tree: with its children, for forking servers) and, with --idle,
 * its RSS before and after opening the idle connections (/proc/PID/...).
 * Exit status: 0 when the run happened (errors are in the JSON), 2 on bad usage.
 *
 * Build: cc -O2 -o loadgen loadgen.c   (Linux only: epoll, /proc)
 *        cc -O2 -DWITH_TLS -o loadgen-tls loadgen.c -lssl -lcrypto   (with TLS)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
#define OPENSSL_SUPPRESS_DEPRECATED /* the ENGINE calls below: see legacy_ec() */
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#ifndef OPENSSL_NO_ENGINE
#include <openssl/engine.h>
#endif
#endif

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define HEADER_LEN 20       /* "%08x %010llu " : connection, request */
#define MIN_SIZE (HEADER_LEN + 1)
#define MAX_SIZE (1 << 20)
#define SCRATCH_SIZE (256 * 1024)
#define MAX_EVENTS 512
#define RING_SIZE 4096      /* bulk: send times of unanswered lines */
#define BACKOFF_NS 10000000ULL  /* after an error a slot waits 10 ms, doubled per error */
#define MAX_BACKOFF_NS 1000000000ULL /* up to 1 s */

/* ---------------------------------------------------------------- time */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t seconds_ns(double s) { return (uint64_t)(s * 1e9); }

/* ----------------------------------------------------------- histogram */
/* Log-linear buckets over nanoseconds: exact below 128 ns, then 64 buckets
 * per power of two (under 1.6 % error), up to about 18 minutes. */

#define SUB_BITS 7
#define SUB_HALF (1 << (SUB_BITS - 1))
#define HIST_BUCKETS 4096

typedef struct {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t sum_ns;
    uint64_t max_ns;
} histogram;

static int bucket_of(uint64_t v) {
    if (v < (1u << SUB_BITS)) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - (SUB_BITS - 1);
    int index = shift * SUB_HALF + (int)(v >> shift);
    return index < HIST_BUCKETS ? index : HIST_BUCKETS - 1;
}

/* The middle of bucket `index`, the value reported for it. */
static double bucket_value(int index) {
    if (index < (1 << SUB_BITS)) return index;
    int shift = index / SUB_HALF - 1;
    uint64_t top = (uint64_t)(index - shift * SUB_HALF);
    uint64_t low = top << shift;
    uint64_t high = ((top + 1) << shift) - 1;
    return ((double)low + (double)high) / 2.0;
}

static void hist_record(histogram *h, uint64_t v) {
    h->counts[bucket_of(v)]++;
    h->total++;
    h->sum_ns += v;
    if (v > h->max_ns) h->max_ns = v;
}

/* The value at quantile q (0 < q <= 1), in nanoseconds; 0 when empty. */
static double hist_quantile(const histogram *h, double q) {
    if (h->total == 0) return 0;
    uint64_t rank = (uint64_t)(q * (double)h->total + 0.999999);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) return bucket_value(i);
    }
    return (double)h->max_ns;
}

/* ------------------------------------------------------------- payload */

static char filler_lower[MAX_SIZE];
static char filler_upper[MAX_SIZE];

static void init_filler(void) {
    static const char letters[] = "abcdefghijklmnopqrstuvwxyz0123456789-_.,";
    for (size_t i = 0; i < MAX_SIZE; i++) {
        filler_lower[i] = letters[i % (sizeof letters - 1)];
        filler_upper[i] = (char)((filler_lower[i] >= 'a' && filler_lower[i] <= 'z')
                                     ? filler_lower[i] - 32 : filler_lower[i]);
    }
}

/* A line is a header ("%08x %010llu ": connection, request number), filler, '\n';
 * `upper` gives the reply.  The filler never changes: set it once, then only the
 * header per request (snprintf would cost more than the rest of the request). */
static void set_body(char *out, size_t size, bool upper) {
    memcpy(out + HEADER_LEN, (upper ? filler_upper : filler_lower) + HEADER_LEN,
           size - HEADER_LEN - 1);
    out[size - 1] = '\n';
}

static void set_header(char *out, uint32_t id, uint64_t seq, bool upper) {
    const char *hex = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    for (int i = 7; i >= 0; i--, id >>= 4) out[i] = hex[id & 15];
    out[8] = ' ';
    seq %= 10000000000ULL;
    for (int i = 18; i >= 9; i--, seq /= 10) out[i] = (char)('0' + seq % 10);
    out[19] = ' ';
}

static void make_line(char *out, size_t size, uint32_t id, uint64_t seq, bool upper) {
    set_body(out, size, upper);
    set_header(out, id, seq, upper);
}

/* ------------------------------------------------------------- options */

enum mode { ONESHOT, PINGPONG, UDP, BULK };
static const char *const mode_names[] = {"oneshot", "pingpong", "udp", "bulk"};

static struct {
    const char *host;
    int port;
    enum mode mode;
    int conns;
    size_t size;
    int idle;
    double duration, warmup, timeout, setup_timeout, drain;
    uint64_t max_requests;
    uint64_t bulk_bytes;
    size_t window;
    int server_pid;
    bool server_tree;
    int src_addrs;
    int setup_parallel;
    bool tls;          /* the tls-* modes: oneshot or pingpong over TLS */
    const char *sni;   /* the server name the TLS client asks for */
} opt = {
    .host = "127.0.0.1", .port = 0, .mode = PINGPONG, .conns = 1, .size = 64, .idle = 0,
    .duration = 5, .warmup = 1, .timeout = 5, .setup_timeout = 60, .drain = 2,
    .max_requests = 50000000, .bulk_bytes = 256ULL << 20, .window = 1 << 20,
    .server_pid = 0, .src_addrs = 1, .setup_parallel = 4, .tls = false, .sni = "localhost",
};

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --port N [--host A]\n"
            "  [--mode oneshot|pingpong|udp|bulk|tls-oneshot|tls-pingpong] [--sni NAME]\n"
            "  [--conns N] [--size BYTES] [--idle N] [--duration S] [--warmup S]\n"
            "  [--timeout S] [--setup-timeout S] [--drain S] [--max-requests N]\n"
            "  [--bulk-bytes N] [--window BYTES] [--server-pid PID [--server-tree]]\n"
            "  [--src-addrs N] [--setup-parallel N] | --selftest\n");
    exit(2);
}

static int parse_mode(const char *text) {
    if (strncmp(text, "tls-", 4) == 0 &&
        (strcmp(text + 4, "oneshot") == 0 || strcmp(text + 4, "pingpong") == 0)) {
#ifdef WITH_TLS
        int mode = parse_mode(text + 4);
        opt.tls = true;
        return mode;
#else
        fprintf(stderr, "loadgen: %s: this load generator was built without TLS "
                        "(build it with -DWITH_TLS -lssl -lcrypto; needs libssl-dev)\n", text);
        exit(2);
#endif
    }
    opt.tls = false;
    for (int i = 0; i < 4; i++)
        if (strcmp(text, mode_names[i]) == 0) return i;
    fprintf(stderr, "loadgen: unknown mode %s\n", text);
    usage();
    return 0;
}

static int selftest(void);

static void parse_options(int argc, char **argv) {
    static const struct option longs[] = {
        {"host", 1, 0, 'h'}, {"port", 1, 0, 'p'}, {"mode", 1, 0, 'm'},
        {"conns", 1, 0, 'c'}, {"size", 1, 0, 's'}, {"idle", 1, 0, 'i'},
        {"duration", 1, 0, 'd'}, {"warmup", 1, 0, 'w'}, {"timeout", 1, 0, 't'},
        {"setup-timeout", 1, 0, 'T'}, {"drain", 1, 0, 'D'}, {"max-requests", 1, 0, 'M'},
        {"bulk-bytes", 1, 0, 'b'}, {"window", 1, 0, 'W'}, {"server-pid", 1, 0, 'P'},
        {"src-addrs", 1, 0, 'a'}, {"setup-parallel", 1, 0, 'S'}, {"selftest", 0, 0, 'X'},
        {"server-tree", 0, 0, 'R'}, {"sni", 1, 0, 'N'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'm': opt.mode = (enum mode)parse_mode(optarg); break;
        case 'c': opt.conns = atoi(optarg); break;
        case 's': opt.size = (size_t)atol(optarg); break;
        case 'i': opt.idle = atoi(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 't': opt.timeout = atof(optarg); break;
        case 'T': opt.setup_timeout = atof(optarg); break;
        case 'D': opt.drain = atof(optarg); break;
        case 'M': opt.max_requests = strtoull(optarg, NULL, 10); break;
        case 'b': opt.bulk_bytes = strtoull(optarg, NULL, 10); break;
        case 'W': opt.window = (size_t)atol(optarg); break;
        case 'P': opt.server_pid = atoi(optarg); break;
        case 'a': opt.src_addrs = atoi(optarg); break;
        case 'S': opt.setup_parallel = atoi(optarg); break;
        case 'R': opt.server_tree = true; break;
        case 'N': opt.sni = optarg; break;
        case 'X': exit(selftest());
        default: usage();
        }
    }
    if (opt.port <= 0 || opt.port > 65535 || opt.conns < 1 || opt.idle < 0 ||
        opt.size < MIN_SIZE || opt.size > MAX_SIZE || opt.duration <= 0 || opt.warmup < 0 ||
        opt.timeout <= 0 || opt.src_addrs < 1 || opt.src_addrs > 250 ||
        opt.setup_parallel < 1 || opt.max_requests < 1)
        usage();
    if (opt.mode == BULK) {
        opt.conns = 1;
        opt.warmup = 0; /* the whole transfer is measured */
    }
    if (opt.mode != PINGPONG) opt.idle = 0;
}

/* -------------------------------------------------------------- errors */

enum error_kind { E_CONNECT, E_RESET, E_EOF, E_MISMATCH, E_TIMEOUT, E_OTHER, E_TLS, E_KINDS };
static const char *const error_names[] = {"connect", "reset", "eof", "mismatch", "timeout",
                                          "other", "tls"};

/* --------------------------------------------------------- connections */

enum state { S_NEW, S_CONNECTING, S_HANDSHAKE, S_SENDING, S_RECEIVING, S_READY, S_BACKOFF,
             S_CLOSED };
enum role { ACTIVE, IDLE };

typedef struct conn {
    int fd;
    uint32_t id;
    enum role role;
    enum state state;
    uint64_t seq;          /* requests started on this slot */
    uint64_t started_ns;   /* current request (oneshot: from connect) or backoff end */
    size_t sent, received; /* progress through the current line */
    char *request, *expected;
#ifdef WITH_TLS
    SSL *ssl;              /* tls-* modes: the connection's TLS session, once connecting */
#endif
    /* bulk only */
    bool in_setup;         /* opened by the setup queue, its checking line not answered yet */
    unsigned failures;     /* errors since the slot's last answered line */
    uint64_t bulk_sent, recv_seq;
    uint64_t ring[RING_SIZE];
} conn;

enum phase { P_SETUP_IDLE, P_SETUP, P_WARMUP, P_MEASURE, P_DRAIN, P_DONE };

static struct {
    int epfd;
    struct sockaddr_in server;
    enum phase phase;
    uint64_t measure_start, measure_end, warmup_end, drain_end, setup_end;
    conn *conns;           /* active slots, then idle ones */
    int n_conns;
    int setup_pending;     /* connections of the setup queue being opened and checked */
    int next_setup, setup_to; /* the setup queue: slots next_setup..setup_to-1 */
    int idle_established, idle_held;
    uint64_t completed_total;   /* every checked reply, warmup included */
    uint64_t measured, measured_bytes;
    uint64_t errors[E_KINDS];
    uint64_t late;         /* UDP replies that came after their timeout */
    uint64_t abandoned;    /* requests still in flight when the drain ended */
    bool capped;
    histogram hist;
    long rss_before_idle_kib, rss_idle_kib;
    double cpu_self_start, cpu_server_start, cpu_self, cpu_server;
    double busy_start, steal_start, busy, steal; /* the whole machine, from /proc/stat */
    bool bulk_done;
#ifdef WITH_TLS
    SSL_CTX *ssl_ctx;
    uint64_t tls_handshakes;    /* completed, warmup included */
    uint64_t tls_measured;      /* completed during the measured window */
    uint64_t tls_resumed;       /* of all of them, those that resumed a session (0) */
    uint64_t tls_other;         /* those whose version or cipher differ from the first's */
    char tls_version[32], tls_cipher[96], tls_group[48];
#endif
    char scratch[SCRATCH_SIZE];
} g;

static void count_error(enum error_kind kind, const char *what, int err) {
    if (g.errors[kind]++ < 3)
        fprintf(stderr, "loadgen: %s error: %s%s%s\n", error_names[kind], what,
                err ? ": " : "", err ? strerror(err) : "");
}

static bool accepting_new(void) {
    return g.phase == P_SETUP || g.phase == P_WARMUP || g.phase == P_MEASURE;
}

static bool in_flight(const conn *c) {
    return c->state == S_CONNECTING || c->state == S_HANDSHAKE || c->state == S_SENDING ||
           c->state == S_RECEIVING;
}

#ifdef WITH_TLS
/* Drop the connection's TLS session; `polite`: say close_notify first (one record,
 * best effort: a full socket or a peer that is gone only loses the goodbye). */
static void tls_end(conn *c, bool polite) {
    if (!c->ssl) return;
    if (polite) SSL_shutdown(c->ssl);
    SSL_free(c->ssl);
    c->ssl = NULL;
    ERR_clear_error();
}
#endif

static void close_conn_politely(conn *c, bool polite) {
#ifdef WITH_TLS
    tls_end(c, polite);
#else
    (void)polite;
#endif
    if (c->fd >= 0) close(c->fd); /* close() also drops it from the epoll set */
    c->fd = -1;
    c->state = S_CLOSED;
}

static void close_conn(conn *c) { close_conn_politely(c, false); }

/* ---------------------------------------------------------------- I/O */
/* send() and recv() on the slot's socket, or SSL_write() and SSL_read() on its TLS
 * session: -1 with errno EAGAIN when TLS wants the socket to be readable or
 * writable first, 0 at the end of the stream (close_notify, or the peer closed). */

#ifdef WITH_TLS
/* The reason of a TLS failure, for the error message (OpenSSL's, else errno's). */
static const char *tls_reason(int err) {
    static char text[256];
    unsigned long code = ERR_get_error();
    if (code) {
        ERR_error_string_n(code, text, sizeof text);
        ERR_clear_error();
        return text;
    }
    snprintf(text, sizeof text, "%s", err ? strerror(err) : "the peer closed the connection");
    return text;
}

static int tls_failure; /* set when a TLS call failed for a TLS reason (not the socket's) */

static ssize_t tls_result(conn *c, int r) {
    int saved = errno;
    int e = SSL_get_error(c->ssl, r);
    tls_failure = 0;
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    if (e == SSL_ERROR_SYSCALL) {
        ERR_clear_error();
        errno = saved ? saved : ECONNRESET;
        return -1;
    }
    tls_failure = 1;
    errno = EPROTO;
    return -1;
}
#endif

static ssize_t io_send(conn *c, const char *data, size_t n) {
#ifdef WITH_TLS
    if (c->ssl) {
        ERR_clear_error();
        int r = SSL_write(c->ssl, data, (int)n);
        return r > 0 ? r : tls_result(c, r);
    }
#endif
    return send(c->fd, data, n, MSG_NOSIGNAL);
}

static ssize_t io_recv(conn *c, char *data, size_t n) {
#ifdef WITH_TLS
    if (c->ssl) {
        ERR_clear_error();
        int r = SSL_read(c->ssl, data, (int)n);
        return r > 0 ? r : tls_result(c, r);
    }
#endif
    return recv(c->fd, data, n, 0);
}

/* After a whole reply: may bytes still wait, unread?  TLS may hold decrypted or
 * undecrypted bytes of its own, which no epoll edge would announce. */
static bool io_pending(conn *c) {
#ifdef WITH_TLS
    if (c->ssl) return SSL_has_pending(c->ssl);
#else
    (void)c;
#endif
    return false;
}

static void start_backoff(conn *c) {
    uint64_t wait = BACKOFF_NS << (c->failures < 7 ? c->failures : 7);
    c->failures++;
    c->state = S_BACKOFF;
    c->started_ns = now_ns() + (wait < MAX_BACKOFF_NS ? wait : MAX_BACKOFF_NS);
}

static void open_slot(conn *c);
static void start_request(conn *c);

/* An error ends the slot's connection; an active slot comes back after a backoff. */
static void fail(conn *c, enum error_kind kind, const char *what, int err) {
    count_error(kind, what, err);
    if (c->in_setup) g.setup_pending--;
    c->in_setup = false;
    if (opt.mode == UDP && c->fd >= 0 && kind != E_CONNECT) {
        start_backoff(c); /* the socket stays; the next datagram is sent later */
        return;
    }
    close_conn(c);
    if (c->role == ACTIVE) start_backoff(c);
}

static int raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    rl.rlim_cur = rl.rlim_max;
    return setrlimit(RLIMIT_NOFILE, &rl);
}

static void bind_source(int fd, uint32_t id) {
    if (opt.src_addrs <= 1) return;
    /* Spread connections over 127.0.0.1..N: each source address has its own
     * ephemeral ports, so short connections do not run out of them. */
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000001u + id % (uint32_t)opt.src_addrs);
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) count_error(E_OTHER, "bind", errno);
}

static void on_connected(conn *c);
static void on_ready(conn *c);
static bool send_rest(conn *c);

/* A failed send or recv: a TLS failure is counted as such, with OpenSSL's reason. */
static void io_fail(conn *c, enum error_kind kind, const char *what, int err) {
#ifdef WITH_TLS
    if (c->ssl && tls_failure) {
        char text[320];
        snprintf(text, sizeof text, "%s: %s", what, tls_reason(0));
        fail(c, E_TLS, text, 0);
        return;
    }
#endif
    fail(c, kind, what, err);
}

#ifdef WITH_TLS
/* ------------------------------------------------------------------ TLS */

/* Count a finished handshake, and remember what the first one negotiated. */
static void tls_record_session(conn *c) {
    g.tls_handshakes++;
    if (g.phase == P_MEASURE) g.tls_measured++;
    if (SSL_session_reused(c->ssl)) g.tls_resumed++;
    const char *version = SSL_get_version(c->ssl);
    const char *cipher = SSL_get_cipher_name(c->ssl);
    if (!g.tls_version[0]) {
        snprintf(g.tls_version, sizeof g.tls_version, "%s", version ? version : "?");
        snprintf(g.tls_cipher, sizeof g.tls_cipher, "%s", cipher ? cipher : "?");
        int nid = SSL_get_negotiated_group(c->ssl);
        const char *group = nid > 0 ? OBJ_nid2sn(nid) : NULL;
        snprintf(g.tls_group, sizeof g.tls_group, "%s", group ? group : "?");
    } else if (!version || !cipher || strcmp(version, g.tls_version) != 0 ||
               strcmp(cipher, g.tls_cipher) != 0) {
        g.tls_other++;
    }
}

/* Drive the handshake as far as the socket allows; once done, the line goes. */
static void tls_handshake(conn *c) {
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        tls_record_session(c);
        on_ready(c);
        return;
    }
    int saved = errno;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return; /* the next edge */
    if (e == SSL_ERROR_SYSCALL && saved == ECONNREFUSED) {
        fail(c, E_CONNECT, "connect", saved);
        return;
    }
    char text[320];
    snprintf(text, sizeof text, "TLS handshake: %s",
             tls_reason(e == SSL_ERROR_SYSCALL ? saved : 0));
    fail(c, E_TLS, text, 0);
}

/* The TCP connection is up (or about to be): start TLS on it.  The ClientHello goes
 * at once; if the socket is not connected yet, OpenSSL keeps it for the next edge. */
static void tls_begin(conn *c) {
    /* A new SSL for every connection (one cleared with SSL_clear() would offer its
     * last session again, and costs as much once that is dropped). */
    c->ssl = SSL_new(g.ssl_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        fail(c, E_OTHER, "SSL_new", 0);
        return;
    }
    SSL_set_tlsext_host_name(c->ssl, (char *)opt.sni);
    SSL_set_connect_state(c->ssl);
    c->state = S_HANDSHAKE;
    tls_handshake(c);
}

#ifndef OPENSSL_NO_ENGINE
/* The client's own cost per handshake, cut by a quarter.  OpenSSL 3.0 decodes the
 * server's public key through its provider decoder framework: setting up a decoder
 * context for every certificate cost about 100 µs per handshake here, a fifth of the
 * load generator's CPU.  With an ENGINE registered for EC keys, OpenSSL takes its
 * 1.1.1 (legacy) path instead: the same DER decoding and the same ECDSA verification
 * of the server's CertificateVerify (EVP_PKEY_meth_find() hands back OpenSSL's own
 * built-in EC method), without the decoder set-up.  Nothing changes on the wire or
 * for the server.  Only EC keys: an RSA certificate takes the usual path. */
static int legacy_ec_meths(ENGINE *e, EVP_PKEY_METHOD **pmeth, const int **nids, int nid) {
    static const int ids[] = {EVP_PKEY_EC};
    (void)e;
    if (!pmeth) {
        *nids = ids;
        return 1;
    }
    *pmeth = nid == EVP_PKEY_EC ? (EVP_PKEY_METHOD *)EVP_PKEY_meth_find(EVP_PKEY_EC) : NULL;
    return *pmeth != NULL;
}

static void legacy_ec(void) {
    ENGINE *e = ENGINE_new();
    if (!e || !ENGINE_set_id(e, "loadgen-ec") || !ENGINE_set_name(e, "loadgen legacy EC") ||
        !ENGINE_set_pkey_meths(e, legacy_ec_meths) || !ENGINE_add(e) || !ENGINE_init(e) ||
        !ENGINE_register_pkey_meths(e)) {
        fprintf(stderr, "loadgen: the EC engine: %s\n", tls_reason(0));
        exit(1);
    }
}
#endif

static int accept_any_chain(X509_STORE_CTX *store, void *arg) {
    (void)store;
    (void)arg;
    return 1;
}

static void tls_setup(void) {
#ifndef OPENSSL_NO_ENGINE
    legacy_ec();
#endif
    g.ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!g.ssl_ctx) {
        fprintf(stderr, "loadgen: SSL_CTX_new: %s\n", tls_reason(0));
        exit(1);
    }
    SSL_CTX_set_min_proto_version(g.ssl_ctx, TLS1_2_VERSION);
    /* The chain is not verified (the server's work is the same either way); TLS 1.3
     * still checks the server's CertificateVerify signature in every handshake. */
    SSL_CTX_set_verify(g.ssl_ctx, SSL_VERIFY_NONE, NULL);
    /* OpenSSL builds and checks the chain even with SSL_VERIFY_NONE (and then ignores
     * the verdict); this callback replaces that work with nothing. */
    SSL_CTX_set_cert_verify_callback(g.ssl_ctx, accept_any_chain, NULL);
    /* No session cache, and no session is ever offered: every handshake is full. */
    SSL_CTX_set_session_cache_mode(g.ssl_ctx, SSL_SESS_CACHE_OFF);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    SSL_CTX_set_options(g.ssl_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF); /* EOF is EOF */
#endif
    /* Read whatever the socket holds in one read(), not a record header and then its body. */
    SSL_CTX_set_read_ahead(g.ssl_ctx, 1);
    SSL_CTX_set_mode(g.ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}
#endif

/* On loopback the handshake usually completes inside connect() itself, so a
 * one-shot line can go at once: that saves waiting for the EPOLLOUT edge.
 * Still connecting (EAGAIN): the edge will come; nothing was sent. */
static void try_early_send(conn *c) {
    c->seq++;
    set_header(c->request, c->id, c->seq, false);
    set_header(c->expected, c->id, c->seq, true);
    c->sent = c->received = 0;
    ssize_t n = send(c->fd, c->request, opt.size, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN)) {
        c->seq--; /* not started after all: on_connected starts it */
        return;
    }
    if (n < 0) {
        fail(c, E_CONNECT, "connect", errno);
        return;
    }
    c->sent = (size_t)n;
    send_rest(c); /* started_ns stays the connect's: the latency includes it */
}

/* Join the epoll set (edge-triggered); false when the slot failed. */
static bool watch(conn *c, uint32_t events) {
    struct epoll_event ev = {.events = events | EPOLLET, .data.ptr = c};
    if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, c->fd, &ev) == 0) return true;
    fail(c, E_OTHER, "epoll_ctl", errno);
    return false;
}

/* A one-shot connection costs the load generator's CPU more than the server's (on
 * loopback, the connecting CPU also runs the server's half of the handshake), so it
 * is kept to what the workload needs.  TCP_QUICKACK off (the kernel's "pingpong"
 * mode, before connect) holds back pure ACKs that data would carry anyway: the
 * handshake's last ACK rides on the request, the reply's ACK on the FIN.  The
 * server sees the same connection, the same bytes and the same FIN after the reply;
 * the wire carries 8 segments instead of 10; about 6% less CPU here per connection.
 * With one connection in flight the load generator waits on the server (it is not
 * the bottleneck) and this measured ~7% more latency, cause unknown: there the ACKs
 * are left alone.  The socket joins the epoll set only
 * once the line is sent (the handshake usually completes inside connect() on
 * loopback), and then without EPOLLOUT, which nothing would use. */
static void open_oneshot(conn *c) {
    bind_source(c->fd, (uint32_t)c->seq);
    if (opt.conns > 1 && !opt.tls) {
        int zero = 0;
        setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &zero, sizeof zero);
    }
    c->started_ns = now_ns();
    c->state = S_CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&g.server, sizeof g.server) != 0 &&
        errno != EINPROGRESS) {
        fail(c, E_CONNECT, "connect", errno);
        return;
    }
#ifdef WITH_TLS
    if (opt.tls) { /* the handshake's flights need both edges */
        /* The Finished and the line go in two writes: with Nagle, the line would wait
         * for the server's ACK of the Finished.  TLS clients (curl, browsers) set it. */
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (watch(c, EPOLLIN | EPOLLOUT | EPOLLRDHUP)) tls_begin(c);
        return;
    }
#endif
    try_early_send(c);
    if (c->fd < 0) return; /* failed */
    watch(c, EPOLLIN | EPOLLRDHUP | (c->state == S_RECEIVING ? 0 : EPOLLOUT));
}

/* Open the slot's socket and connect; the line follows once connected. */
static void open_slot(conn *c) {
    bool udp = opt.mode == UDP;
    c->fd = socket(AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        fail(c, E_OTHER, "socket", errno);
        return;
    }
    if (opt.mode == ONESHOT) {
        open_oneshot(c);
        return;
    }
    if (!udp) {
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (!watch(c, EPOLLIN | EPOLLOUT | EPOLLRDHUP)) return;
    c->started_ns = now_ns();
    c->state = S_CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&g.server, sizeof g.server) == 0)
        on_connected(c);
    else if (errno != EINPROGRESS)
        fail(c, E_CONNECT, "connect", errno);
}

static void bulk_send(conn *c);

static void on_connected(conn *c) {
#ifdef WITH_TLS
    if (opt.tls) {
        tls_begin(c);
        return;
    }
#endif
    on_ready(c);
}

/* The connection carries lines from now on (over TLS: the handshake is done). */
static void on_ready(conn *c) {
    if (opt.mode == BULK) {
        c->state = S_RECEIVING; /* from now on: "in flight" until the last reply */
        bulk_send(c);
        return;
    }
    if (opt.mode == PINGPONG && !c->in_setup) { /* reconnected after an error */
        c->state = S_READY;
        if (g.phase != P_SETUP && accepting_new() && !g.capped) start_request(c);
        return;
    }
    uint64_t started = c->started_ns; /* oneshot: the latency includes the connect (and TLS) */
    start_request(c);
    if (opt.mode == ONESHOT && in_flight(c)) c->started_ns = started;
}

/* Write what is left of the current line; false when the slot failed. */
static bool send_rest(conn *c) {
    while (c->sent < opt.size) {
        ssize_t n = io_send(c, c->request + c->sent, opt.size - c->sent);
        if (n > 0) {
            c->sent += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->state = S_SENDING;
            return true;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            io_fail(c, opt.mode == UDP && errno == ECONNREFUSED ? E_CONNECT : E_RESET, "send",
                    errno);
            return false;
        }
    }
    c->state = S_RECEIVING;
    return true;
}

static void start_request(conn *c) {
    c->seq++;
    set_header(c->request, c->id, c->seq, false);
    set_header(c->expected, c->id, c->seq, true);
    c->sent = c->received = 0;
    c->started_ns = now_ns();
    send_rest(c);
}

static void record(uint64_t latency_ns, size_t bytes) {
    g.completed_total++;
    if (g.phase == P_MEASURE) {
        g.measured++;
        g.measured_bytes += bytes;
        hist_record(&g.hist, latency_ns);
    }
    if (g.completed_total >= opt.max_requests && accepting_new()) g.capped = true;
}

static void complete(conn *c) {
    uint64_t t = now_ns();
    c->failures = 0;
    if (c->in_setup) { /* the connection works: it is ready (or idle) from now on */
        c->in_setup = false;
        c->state = S_READY;
        g.setup_pending--;
        if (c->role == IDLE) g.idle_established++;
        return;
    }
    record(t - c->started_ns, opt.size);
    if (opt.mode == ONESHOT) {
        close_conn_politely(c, true); /* over TLS, close_notify first */
        if (accepting_new() && !g.capped) open_slot(c);
        return;
    }
    c->state = S_READY;
    if (accepting_new() && !g.capped && g.phase != P_SETUP) start_request(c);
}

/* Check `n` reply bytes against the expected line; false when the slot failed. */
static bool check_bytes(conn *c, const char *data, size_t n) {
    if (c->received + n > opt.size) {
        fail(c, E_MISMATCH, "more bytes than the reply", 0);
        return false;
    }
    if (memcmp(data, c->expected + c->received, n) != 0) {
        fail(c, E_MISMATCH, "reply differs from the upper-cased line", 0);
        return false;
    }
    c->received += n;
    return true;
}

static void on_readable_stream(conn *c) {
    for (;;) {
        ssize_t n = io_recv(c, g.scratch, sizeof g.scratch);
        if (n > 0) {
            if (c->state != S_RECEIVING) {
                fail(c, E_MISMATCH, "bytes with no request in flight", 0);
                return;
            }
            if (!check_bytes(c, g.scratch, (size_t)n)) return;
            if (c->received == opt.size) {
                complete(c);
                /* oneshot: that socket is closed (the slot may hold a new one) */
                if (opt.mode == ONESHOT || c->state == S_CLOSED || c->state == S_BACKOFF) return;
                /* TLS: a whole reply, and nothing left in TLS's buffers: the bytes
                 * that come next (the next reply) bring their own edge. */
                if (opt.tls && !io_pending(c)) return;
            }
            /* A short read emptied the socket: no need for a recv that says EAGAIN
             * (edge-triggered epoll reports the next bytes when they come).  Not so
             * over TLS, which returns one record per read: read until it says EAGAIN. */
            if (!opt.tls && (size_t)n < sizeof g.scratch) return;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0 && errno == EINTR) continue;
        if (n == 0)
            fail(c, E_EOF, "server closed the connection", 0);
        else
            io_fail(c, E_RESET, "recv", errno);
        return;
    }
}

static uint64_t udp_seq_of(const char *data) {
    return strtoull(data + 9, NULL, 10);
}

static void on_readable_udp(conn *c) {
    for (;;) {
        ssize_t n = recv(c->fd, g.scratch, sizeof g.scratch, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR) continue;
            fail(c, errno == ECONNREFUSED ? E_CONNECT : E_OTHER, "recv", errno);
            return;
        }
        if (c->state == S_RECEIVING && (size_t)n == opt.size &&
            memcmp(g.scratch, c->expected, opt.size) == 0) {
            complete(c); /* a datagram arriving later is reported by its own edge */
            return;
        }
        if ((size_t)n == opt.size && udp_seq_of(g.scratch) < c->seq % 10000000000ULL) {
            g.late++; /* the answer to a request that already timed out */
            continue;
        }
        fail(c, E_MISMATCH, "datagram differs from the upper-cased one", 0);
        return;
    }
}

/* ------------------------------------------------------------------ bulk */

static void bulk_send(conn *c) {
    size_t lines_window = opt.window / opt.size ? opt.window / opt.size : 1;
    if (lines_window > RING_SIZE) lines_window = RING_SIZE;
    uint64_t total_lines = (opt.bulk_bytes + opt.size - 1) / opt.size;
    while (accepting_new() && c->bulk_sent < total_lines &&
           c->bulk_sent - c->recv_seq < lines_window) {
        if (c->sent == 0) set_header(c->request, c->id, c->bulk_sent + 1, false);
        ssize_t n = send(c->fd, c->request + c->sent, opt.size - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR) continue;
            fail(c, E_RESET, "send", errno);
            return;
        }
        c->sent += (size_t)n;
        if (c->sent == opt.size) {
            c->ring[c->bulk_sent % RING_SIZE] = now_ns();
            c->bulk_sent++;
            c->sent = 0;
        }
    }
}

static void bulk_receive(conn *c) {
    for (;;) {
        ssize_t n = recv(c->fd, g.scratch, sizeof g.scratch, 0);
        if (n == 0) {
            fail(c, E_EOF, "server closed the connection", 0);
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR) continue;
            fail(c, E_RESET, "recv", errno);
            return;
        }
        c->started_ns = now_ns(); /* bulk: the timeout is on progress */
        size_t at = 0;
        while (at < (size_t)n) {
            if (c->recv_seq >= c->bulk_sent && c->sent == 0) {
                fail(c, E_MISMATCH, "bytes with no line in flight", 0);
                return;
            }
            if (c->received == 0) set_header(c->expected, c->id, c->recv_seq + 1, true);
            size_t take = opt.size - c->received;
            if (take > (size_t)n - at) take = (size_t)n - at;
            if (memcmp(g.scratch + at, c->expected + c->received, take) != 0) {
                fail(c, E_MISMATCH, "reply differs from the upper-cased line", 0);
                return;
            }
            c->received += take;
            at += take;
            if (c->received == opt.size) {
                c->received = 0;
                record(now_ns() - c->ring[c->recv_seq % RING_SIZE], opt.size);
                c->recv_seq++;
            }
        }
        uint64_t total_lines = (opt.bulk_bytes + opt.size - 1) / opt.size;
        if (c->recv_seq >= total_lines) {
            g.bulk_done = true;
            return;
        }
    }
}

static void on_event_bulk(conn *c, uint32_t events) {
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) bulk_receive(c);
    if (c->fd < 0 || g.bulk_done) return;
    bulk_send(c);
}

/* --------------------------------------------------------------- events */

/* A connect finished, well or not; false when the slot failed. */
static bool finish_connect(conn *c, uint32_t events) {
    if (events & (EPOLLERR | EPOLLHUP)) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        fail(c, E_CONNECT, "connect", err);
        return false;
    }
    on_connected(c);
    return c->fd >= 0;
}

static void on_event(conn *c, uint32_t events) {
    if (c->fd < 0) return;
    if (c->state == S_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        if (!finish_connect(c, events)) return;
        if (opt.mode == ONESHOT || opt.mode == BULK || c->state == S_HANDSHAKE)
            return; /* nothing to read yet */
    }
#ifdef WITH_TLS
    if (c->state == S_HANDSHAKE) { /* the server's flight came, or the socket connected */
        tls_handshake(c);
        return;
    }
#endif
    if (opt.mode == BULK) {
        on_event_bulk(c, events);
        return;
    }
    if (c->state == S_SENDING && (events & EPOLLOUT)) {
        if (!send_rest(c)) return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
        if (opt.mode == UDP)
            on_readable_udp(c);
        else
            on_readable_stream(c);
    }
}

/* ---------------------------------------------------------- /proc reads */

static double self_cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* CPU time of a process (all its threads, and the children it reaped), in seconds;
 * -1 if unknown. */
static double process_cpu_seconds(int pid) {
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    char *p = strrchr(line, ')');
    if (!p) return -1;
    unsigned long utime = 0, stime = 0;
    long cutime = 0, cstime = 0;
    /* after ')': state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime stime cutime cstime; the last two add the children it reaped (forking servers) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %ld %ld", &utime,
               &stime, &cutime, &cstime) != 4)
        return -1;
    return (double)(utime + stime + (unsigned long)cutime + (unsigned long)cstime) /
           (double)sysconf(_SC_CLK_TCK);
}

/* The same over a process and its descendants (a forking server's live children):
 * a child reaped between two readings moves from "live" into its parent's cutime,
 * so differences stay right. */
static double tree_cpu_seconds(int pid, int depth) {
    double total = process_cpu_seconds(pid);
    if (total < 0 || depth > 3) return total;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *tasks = opendir(path);
    if (!tasks) return total;
    struct dirent *task;
    while ((task = readdir(tasks)) != NULL) {
        if (task->d_name[0] == '.') continue;
        char children_path[300];
        snprintf(children_path, sizeof children_path, "/proc/%d/task/%s/children", pid,
                 task->d_name);
        FILE *f = fopen(children_path, "r");
        if (!f) continue;
        int child;
        while (fscanf(f, "%d", &child) == 1) {
            double c = tree_cpu_seconds(child, depth + 1);
            if (c > 0) total += c;
        }
        fclose(f);
    }
    closedir(tasks);
    return total;
}

/* The server's CPU seconds (with --server-tree, its children's too); -1 if unknown. */
static double server_cpu_seconds(void) {
    if (opt.server_pid <= 0) return -1;
    return opt.server_tree ? tree_cpu_seconds(opt.server_pid, 0) : process_cpu_seconds(opt.server_pid);
}

/* CPU seconds the whole machine spent busy (all CPUs), and those stolen by the
 * hypervisor, from the first line of /proc/stat; -1 if unknown. */
static void machine_cpu_seconds(double *busy, double *steal) {
    unsigned long long v[8] = {0};
    *busy = *steal = -1;
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8) return;
    double tick = (double)sysconf(_SC_CLK_TCK);
    /* user nice system idle iowait irq softirq steal: busy leaves out idle and iowait */
    *busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / tick;
    *steal = (double)v[7] / tick;
}

static long server_rss_kib(void) {
    if (opt.server_pid <= 0) return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", opt.server_pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
    fclose(f);
    return kib;
}

/* ---------------------------------------------------------------- phases */

static int count_idle_held(void) {
    int n = 0;
    for (int i = opt.conns; i < g.n_conns; i++) n += g.conns[i].state == S_READY;
    return n;
}

/* Restart slots whose backoff ended; fail requests older than --timeout. */
static void check_slots(uint64_t t, int from, int to) {
    uint64_t limit = seconds_ns(opt.timeout);
    for (int i = from; i < to; i++) {
        conn *c = &g.conns[i];
        if (c->state == S_BACKOFF && t >= c->started_ns && accepting_new() && !g.capped) {
            if (opt.mode == UDP && c->fd >= 0)
                start_request(c);
            else
                open_slot(c);
        } else if (in_flight(c) && t > c->started_ns + limit && g.phase != P_DRAIN) {
            fail(c, E_TIMEOUT, opt.mode == UDP ? "no answer to the datagram" : "no reply in time",
                 0);
        }
    }
}


static void begin_measure(uint64_t t) {
    g.phase = P_MEASURE;
    g.measure_start = t;
    g.measure_end = t + seconds_ns(opt.duration);
    g.cpu_self_start = self_cpu_seconds();
    g.cpu_server_start = server_cpu_seconds();
    machine_cpu_seconds(&g.busy_start, &g.steal_start);
}

static void end_measure(uint64_t t) {
    g.measure_end = t;
    g.cpu_self = self_cpu_seconds() - g.cpu_self_start;
    double server = server_cpu_seconds();
    g.cpu_server = (server >= 0 && g.cpu_server_start >= 0) ? server - g.cpu_server_start : -1;
    double busy, steal;
    machine_cpu_seconds(&busy, &steal);
    g.busy = (busy >= 0 && g.busy_start >= 0) ? busy - g.busy_start : -1;
    g.steal = (steal >= 0 && g.steal_start >= 0) ? steal - g.steal_start : -1;
    g.phase = P_DRAIN;
    g.idle_held = count_idle_held();
    double drain = opt.drain < opt.timeout ? opt.drain : opt.timeout;
    g.drain_end = t + seconds_ns(drain);
}

static void start_load(uint64_t t) {
    g.phase = opt.warmup > 0 ? P_WARMUP : P_MEASURE;
    g.warmup_end = t + seconds_ns(opt.warmup);
    if (g.phase == P_MEASURE) begin_measure(t);
    for (int i = 0; i < opt.conns; i++) {
        conn *c = &g.conns[i];
        if (c->state == S_READY) start_request(c);
        else if (c->state == S_NEW) open_slot(c);
    }
}

/* Persistent connections open --setup-parallel at a time, each checked with one line
 * before the next opens: a burst of connects could overflow a small listen backlog
 * (the stdlib's is 5) and stall on SYN retransmits, and setup is not what is measured. */
static void begin_setup(enum phase phase, int from, int to, uint64_t t) {
    g.phase = phase;
    g.next_setup = from;
    g.setup_to = to;
    g.setup_pending = 0;
    g.setup_end = t + seconds_ns(opt.setup_timeout);
}

static void open_more(void) {
    while (g.setup_pending < opt.setup_parallel && g.next_setup < g.setup_to) {
        conn *c = &g.conns[g.next_setup++];
        c->in_setup = true;
        g.setup_pending++;
        open_slot(c);
    }
}

static bool setup_finished(void) { return g.next_setup == g.setup_to && g.setup_pending == 0; }

static int count_in_flight(void) {
    int n = 0;
    for (int i = 0; i < opt.conns; i++) n += in_flight(&g.conns[i]);
    return n;
}

/* Move through the phases; true while the run goes on. */
static bool advance(uint64_t t) {
    switch (g.phase) {
    case P_SETUP_IDLE:
        open_more();
        if (setup_finished() || t >= g.setup_end) {
            g.rss_idle_kib = server_rss_kib();
            begin_setup(P_SETUP, 0, opt.conns, t);
        }
        return true;
    case P_SETUP:
        open_more();
        if (setup_finished() || t >= g.setup_end) start_load(t);
        return true;
    case P_WARMUP:
        if (t >= g.warmup_end || g.capped) begin_measure(t);
        return true;
    case P_MEASURE:
        if (t >= g.measure_end || g.capped || g.bulk_done) end_measure(t);
        return true;
    case P_DRAIN:
        if (opt.mode == BULK || count_in_flight() == 0 || t >= g.drain_end) {
            g.abandoned = opt.mode == BULK ? 0 : (uint64_t)count_in_flight();
            g.phase = P_DONE;
        }
        return g.phase != P_DONE;
    case P_DONE:
        return false;
    }
    return false;
}

static void run(void) {
    struct epoll_event events[MAX_EVENTS];
    uint64_t t = now_ns(), next_scan = t, next_idle_scan = t;
    if (opt.idle > 0) {
        g.rss_before_idle_kib = server_rss_kib();
        begin_setup(P_SETUP_IDLE, opt.conns, g.n_conns, t);
    } else if (opt.mode == PINGPONG) {
        begin_setup(P_SETUP, 0, opt.conns, t);
    } else {
        start_load(t);
    }
    while (advance(t)) {
        int n = epoll_wait(g.epfd, events, MAX_EVENTS, 5);
        if (n < 0 && errno != EINTR) {
            perror("loadgen: epoll_wait");
            exit(1);
        }
        for (int i = 0; i < n; i++) on_event(events[i].data.ptr, events[i].events);
        t = now_ns();
        if (t >= next_scan) {
            check_slots(t, 0, opt.conns);
            next_scan = t + 2000000; /* active slots every 2 ms: backoffs end on time */
        }
        if (t >= next_idle_scan) {
            check_slots(t, opt.conns, g.n_conns);
            next_idle_scan = t + 100000000; /* idle ones every 100 ms */
        }
    }
}

/* --------------------------------------------------------------- output */

static void print_result(void) {
    double elapsed = (double)(g.measure_end - g.measure_start) / 1e9;
    if (g.measure_start == 0) elapsed = 0;
    uint64_t errors = 0;
    for (int k = 0; k < E_KINDS; k++) errors += g.errors[k];
    printf("{\"mode\": \"%s%s\", \"conns\": %d, \"size\": %zu, \"idle\": %d, ",
           opt.tls ? "tls-" : "", mode_names[opt.mode], opt.conns, opt.size, opt.idle);
    printf("\"requests\": %llu, \"elapsed_s\": %.6f, \"rps\": %.1f, \"mib_s\": %.2f, ",
           (unsigned long long)g.measured, elapsed, elapsed > 0 ? g.measured / elapsed : 0.0,
           elapsed > 0 ? g.measured_bytes / elapsed / 1048576.0 : 0.0);
    printf("\"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, ",
           hist_quantile(&g.hist, 0.5) / 1e3, hist_quantile(&g.hist, 0.9) / 1e3,
           hist_quantile(&g.hist, 0.99) / 1e3, hist_quantile(&g.hist, 0.999) / 1e3);
    printf("\"max_us\": %.1f, \"mean_us\": %.1f, ", g.hist.max_ns / 1e3,
           g.hist.total ? (double)g.hist.sum_ns / (double)g.hist.total / 1e3 : 0.0);
    printf("\"errors\": %llu, \"error_kinds\": {", (unsigned long long)errors);
    for (int k = 0; k < E_KINDS; k++)
        printf("%s\"%s\": %llu", k ? ", " : "", error_names[k], (unsigned long long)g.errors[k]);
    printf("}, \"late\": %llu, \"abandoned\": %llu, \"completed_total\": %llu, ",
           (unsigned long long)g.late, (unsigned long long)g.abandoned,
           (unsigned long long)g.completed_total);
    printf("\"capped\": %s, \"bulk_done\": %s, ", g.capped ? "true" : "false",
           g.bulk_done ? "true" : "false");
    printf("\"idle_established\": %d, \"idle_held\": %d, ", g.idle_established, g.idle_held);
    printf("\"rss_before_idle_kib\": %ld, \"rss_idle_kib\": %ld, ", g.rss_before_idle_kib,
           g.rss_idle_kib);
    printf("\"loadgen_cpu\": %.3f, \"server_cpu\": %.3f, ", elapsed > 0 ? g.cpu_self / elapsed : 0.0,
           (elapsed > 0 && g.cpu_server >= 0) ? g.cpu_server / elapsed : -1.0);
    printf("\"machine_cpu\": %.3f, \"steal_cpu\": %.3f",
           (elapsed > 0 && g.busy >= 0) ? g.busy / elapsed : -1.0,
           (elapsed > 0 && g.steal >= 0) ? g.steal / elapsed : -1.0);
#ifdef WITH_TLS
    if (opt.tls) {
        printf(", \"tls_version\": \"%s\", \"tls_cipher\": \"%s\", \"tls_group\": \"%s\", ",
               g.tls_version, g.tls_cipher, g.tls_group);
        printf("\"tls_handshakes\": %llu, \"tls_handshakes_measured\": %llu, ",
               (unsigned long long)g.tls_handshakes, (unsigned long long)g.tls_measured);
        printf("\"tls_resumed\": %llu, \"tls_other_sessions\": %llu, \"tls_library\": \"%s\"",
               (unsigned long long)g.tls_resumed, (unsigned long long)g.tls_other,
               OpenSSL_version(OPENSSL_VERSION));
    }
#endif
    printf("}\n");
    fflush(stdout);
}

static void setup(void) {
    signal(SIGPIPE, SIG_IGN);
    if (raise_nofile() != 0) perror("loadgen: RLIMIT_NOFILE");
    init_filler();
    g.server.sin_family = AF_INET;
    g.server.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &g.server.sin_addr) != 1) {
        fprintf(stderr, "loadgen: --host must be an IPv4 address\n");
        exit(2);
    }
    g.epfd = epoll_create1(EPOLL_CLOEXEC);
#ifdef WITH_TLS
    if (opt.tls) tls_setup();
#endif
    g.n_conns = opt.conns + opt.idle;
    g.conns = calloc((size_t)g.n_conns, sizeof(conn));
    g.rss_before_idle_kib = g.rss_idle_kib = -1;
    for (int i = 0; i < g.n_conns; i++) {
        conn *c = &g.conns[i];
        c->fd = -1;
        c->id = (uint32_t)i;
        c->role = i < opt.conns ? ACTIVE : IDLE;
        c->request = malloc(opt.size);
        c->expected = malloc(opt.size);
        if (!c->request || !c->expected) {
            fprintf(stderr, "loadgen: out of memory\n");
            exit(1);
        }
        set_body(c->request, opt.size, false);
        set_body(c->expected, opt.size, true);
    }
}

int main(int argc, char **argv) {
    parse_options(argc, argv);
    setup();
    run();
    print_result();
    for (int i = 0; i < g.n_conns; i++) close_conn(&g.conns[i]);
    return 0;
}

/* -------------------------------------------------------------- selftest */

static int check(bool ok, const char *what) {
    if (!ok) fprintf(stderr, "selftest failed: %s\n", what);
    return ok ? 0 : 1;
}

static int selftest(void) {
    int failures = 0;
    init_filler();
    /* Buckets are continuous, ordered, and hold their values. */
    int last = -1;
    for (uint64_t v = 0; v < 5000000; v += 1 + v / 97) {
        int b = bucket_of(v);
        failures += check(b >= last, "buckets ordered");
        double mid = bucket_value(b);
        failures += check(mid >= 0.98 * (double)v - 1 && mid <= 1.02 * (double)v + 1,
                          "bucket value within 2%");
        last = b;
    }
    static histogram h;
    for (uint64_t v = 1; v <= 1000; v++) hist_record(&h, v * 1000); /* 1..1000 us */
    double p50 = hist_quantile(&h, 0.5), p99 = hist_quantile(&h, 0.99);
    failures += check(p50 > 490e3 && p50 < 510e3, "p50 of 1..1000 us is 500 us");
    failures += check(p99 > 970e3 && p99 < 1010e3, "p99 of 1..1000 us is 990 us");
    /* A line and its reply differ only in case, and end with a newline. */
    char line[64], reply[64];
    make_line(line, sizeof line, 0xabc, 42, false);
    make_line(reply, sizeof reply, 0xabc, 42, true);
    failures += check(line[63] == '\n' && reply[63] == '\n', "lines end with a newline");
    failures += check(memcmp(line, "00000abc 0000000042 ", HEADER_LEN) == 0, "header");
    for (uint64_t seq = 1; seq < 30000000000ULL; seq = seq * 7 + 3) {
        char want[HEADER_LEN + 1];
        snprintf(want, sizeof want, "%08X %010llu ", 0xdeadbeefu,
                 (unsigned long long)(seq % 10000000000ULL));
        char got[HEADER_LEN];
        set_header(got, 0xdeadbeefu, seq, true);
        failures += check(memcmp(got, want, HEADER_LEN) == 0, "header digits");
    }
    bool same = true;
    for (int i = 0; i < 64; i++) {
        char up = (line[i] >= 'a' && line[i] <= 'z') ? (char)(line[i] - 32) : line[i];
        same = same && up == reply[i];
    }
    failures += check(same, "reply is the upper-cased line");
    failures += check(memcmp(line, reply, 64) != 0, "an echo is not a valid reply");
    printf("{\"selftest\": %s}\n", failures ? "false" : "true");
    return failures ? 1 : 0;
}
