/*
 * `where` filter expressions: a recursive-descent compiler to a flat
 * program of jump code, and an evaluator that runs it over an event's
 * msgpack without decoding it.
 *
 * The program is a list of instructions that leave their result in one
 * boolean accumulator. `a and b` compiles to  a; JF end; b; end:  and
 * `a or b` to  a; JT end; b; end: , so evaluation is one loop with no
 * recursion and no stack, whatever the shape of the expression. The
 * parser recurses once per parenthesis and `not`, counted against
 * EVS_WHERE_MAX_DEPTH; and/or chains and paths are loops.
 *
 * The compiled form is one allocation (header, instructions, operands,
 * path steps, string pool) and is never written after compiling, so any
 * number of threads may evaluate it at once.
 */
#include "where.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evs_internal.h"
#include "mpscan.h"

/* ---- compiled form ------------------------------------------------ */

enum { OP_CMP, OP_IN, OP_DEF, OP_TRUTH, OP_CONST, OP_NOT, OP_JT, OP_JF };
enum { C_EQ, C_NE, C_LT, C_LE, C_GT, C_GE };
enum { R_LIT, R_DATA, R_META, R_TYPE, R_TOPIC, R_ID, R_TS };
/* Value kinds, for literals and for values read from an event. */
enum { V_MISSING, V_NULL, V_BOOL, V_INT, V_UINT, V_FLOAT, V_STR, V_OTHER };

typedef struct insn {
    uint8_t  op;
    uint8_t  cmp;  /* OP_CMP: C_*; OP_CONST: the value */
    uint32_t a;    /* CMP/IN/DEF/TRUTH: lhs operand; JT/JF: target pc */
    uint32_t b;    /* CMP: rhs operand; IN: first list operand */
    uint32_t n;    /* IN: list length */
} insn;

typedef struct operand {
    uint8_t  root;  /* R_* */
    uint8_t  kind;  /* R_LIT: V_* */
    uint32_t step0; /* paths: first step */
    uint32_t nsteps;
    union {
        bool     b;
        int64_t  i;
        uint64_t u;
        double   f;
        struct { uint32_t off, len; } s; /* in the pool */
    } lit;
} operand;

#define STEP_KEY UINT32_MAX
typedef struct step {
    uint32_t index; /* array index, or STEP_KEY */
    uint32_t off;   /* key: in the pool */
    uint32_t len;
} step;

struct evs_where {
    uint32_t       ninsn;
    const insn    *insns;
    const operand *ops;
    const step    *steps;
    const char    *pool;
};

/* ---- evaluation --------------------------------------------------- */

typedef struct val {
    int kind;
    union {
        bool     b;
        int64_t  i;
        uint64_t u;
        double   f;
        struct { const uint8_t *p; size_t len; } s;
    } v;
} val;

/* Skip depth for array elements: at least what events may hold. */
#define WALK_DEPTH 64u

static val from_mp(const uint8_t *p, size_t len)
{
    val r = {.kind = V_MISSING};
    evs_mpval m;
    if (len == 0 || evs__mp_read(p, len, &m) != 0)
        return r;
    switch (m.type) {
    case MSGPACK_OBJECT_NIL: r.kind = V_NULL; break;
    case MSGPACK_OBJECT_BOOLEAN: r.kind = V_BOOL; r.v.b = m.v.b; break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: r.kind = V_UINT; r.v.u = m.v.u; break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: r.kind = V_INT; r.v.i = m.v.i; break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: r.kind = V_FLOAT; r.v.f = m.v.f; break;
    case MSGPACK_OBJECT_STR:
        r.kind = V_STR;
        r.v.s.p = m.v.raw.p;
        r.v.s.len = m.v.raw.len;
        break;
    default: r.kind = V_OTHER; break;
    }
    return r;
}

/* Follow the operand's steps from the value at p[0..len). */
static val walk(const evs_where *w, const operand *o, const uint8_t *p, size_t len)
{
    val missing = {.kind = V_MISSING};
    for (uint32_t k = 0; k < o->nsteps; k++) {
        const step *st = &w->steps[o->step0 + k];
        evs_mpval m;
        if (len == 0 || evs__mp_read(p, len, &m) != 0)
            return missing;
        if (st->index == STEP_KEY) {
            const uint8_t *vp;
            size_t vl;
            if (m.type != MSGPACK_OBJECT_MAP ||
                evs__mp_map_find(p, len, w->pool + st->off, st->len, &vp, &vl) != 0)
                return missing;
            p = vp;
            len = vl;
        } else {
            if (m.type != MSGPACK_OBJECT_ARRAY || st->index >= m.v.n)
                return missing;
            size_t off = m.size, sz;
            for (uint32_t j = 0; j < st->index; j++) {
                if (evs__mp_check(p + off, len - off, WALK_DEPTH, &sz) != 0)
                    return missing;
                off += sz;
            }
            if (evs__mp_check(p + off, len - off, WALK_DEPTH, &sz) != 0)
                return missing;
            p += off;
            len = sz;
        }
    }
    return from_mp(p, len);
}

static val str_val(const void *p, size_t len)
{
    val r = {.kind = V_STR};
    r.v.s.p = p;
    r.v.s.len = p ? len : 0;
    return r;
}

static val fetch(const evs_where *w, const operand *o, const evs_where_input *in)
{
    val r = {.kind = V_MISSING};
    switch (o->root) {
    case R_LIT:
        r.kind = o->kind;
        if (o->kind == V_STR)
            return str_val(w->pool + o->lit.s.off, o->lit.s.len);
        if (o->kind == V_BOOL)
            r.v.b = o->lit.b;
        else if (o->kind == V_INT)
            r.v.i = o->lit.i;
        else if (o->kind == V_UINT)
            r.v.u = o->lit.u;
        else if (o->kind == V_FLOAT)
            r.v.f = o->lit.f;
        return r;
    case R_TYPE: return str_val(in->type_name, in->type_name_len);
    case R_TOPIC: return str_val(in->topic, in->topic_len);
    case R_ID: r.kind = V_UINT; r.v.u = in->id; return r;
    case R_TS: r.kind = V_INT; r.v.i = in->timestamp; return r;
    case R_DATA:
        if (in->content == EVS_CONTENT_MSGPACK && in->data && in->len > 0)
            return walk(w, o, in->data, in->len);
        if (in->content == EVS_CONTENT_TEXT && o->nsteps == 0)
            return str_val(in->data, in->len);
        return r;
    case R_META:
        if (in->meta && in->meta_len > 0)
            return walk(w, o, in->meta, in->meta_len);
        return r;
    }
    return r;
}

#define UNORDERED 2

/* Compare u with d exactly (d may be any double). */
static int cmp_u64_f(uint64_t u, double d)
{
    if (isnan(d))
        return UNORDERED;
    if (d < 0)
        return 1;
    if (d >= 18446744073709551616.0)
        return -1;
    uint64_t t = (uint64_t)d; /* trunc(d), exact: 0 <= d < 2^64 */
    if (u != t)
        return u < t ? -1 : 1;
    return d - (double)t > 0 ? -1 : 0; /* d - trunc(d) is exact */
}

/* Magnitude of a negative int64, INT64_MIN included. */
static uint64_t neg_mag(int64_t i) { return (uint64_t)(-(i + 1)) + 1; }

static int cmp_i64_f(int64_t i, double d)
{
    if (i >= 0)
        return cmp_u64_f((uint64_t)i, d);
    int c = cmp_u64_f(neg_mag(i), -d); /* i < d  <=>  -i > -d */
    return c == UNORDERED ? c : -c;
}

static int cmp_num(const val *a, const val *b)
{
    if (a->kind == V_FLOAT && b->kind == V_FLOAT) {
        if (isnan(a->v.f) || isnan(b->v.f))
            return UNORDERED;
        return a->v.f < b->v.f ? -1 : a->v.f > b->v.f;
    }
    if (b->kind == V_FLOAT)
        return a->kind == V_UINT ? cmp_u64_f(a->v.u, b->v.f) : cmp_i64_f(a->v.i, b->v.f);
    if (a->kind == V_FLOAT) {
        int c = b->kind == V_UINT ? cmp_u64_f(b->v.u, a->v.f) : cmp_i64_f(b->v.i, a->v.f);
        return c == UNORDERED ? c : -c;
    }
    /* Both integers: sign, then magnitude. */
    bool an = a->kind == V_INT && a->v.i < 0, bn = b->kind == V_INT && b->v.i < 0;
    if (an != bn)
        return an ? -1 : 1;
    uint64_t am = an ? neg_mag(a->v.i) : a->kind == V_UINT ? a->v.u : (uint64_t)a->v.i;
    uint64_t bm = bn ? neg_mag(b->v.i) : b->kind == V_UINT ? b->v.u : (uint64_t)b->v.i;
    int c = am < bm ? -1 : am > bm;
    return an ? -c : c;
}

static bool is_num(int k) { return k == V_INT || k == V_UINT || k == V_FLOAT; }

static bool apply(int op, int c)
{
    switch (op) {
    case C_EQ: return c == 0;
    case C_NE: return c != 0;
    case C_LT: return c < 0;
    case C_LE: return c <= 0;
    case C_GT: return c > 0;
    case C_GE: return c >= 0;
    }
    return false;
}

static bool compare(const val *a, int op, const val *b)
{
    if (a->kind == V_MISSING || b->kind == V_MISSING)
        return false;
    if (is_num(a->kind) && is_num(b->kind)) {
        int c = cmp_num(a, b);
        return c == UNORDERED ? op == C_NE : apply(op, c);
    }
    if (a->kind == V_STR && b->kind == V_STR) {
        size_t n = a->v.s.len < b->v.s.len ? a->v.s.len : b->v.s.len;
        int c = n ? memcmp(a->v.s.p, b->v.s.p, n) : 0;
        if (c == 0)
            c = a->v.s.len < b->v.s.len ? -1 : a->v.s.len > b->v.s.len;
        return apply(op, c < 0 ? -1 : c > 0);
    }
    if (a->kind == b->kind && (a->kind == V_BOOL || a->kind == V_NULL)) {
        bool eq = a->kind == V_NULL || a->v.b == b->v.b;
        return op == C_EQ ? eq : op == C_NE ? !eq : false;
    }
    return op == C_NE; /* different types, or not comparable */
}

bool evs__where_eval(const evs_where *w, const evs_where_input *in)
{
    bool acc = false;
    uint32_t pc = 0;
    while (pc < w->ninsn) {
        const insn *I = &w->insns[pc++];
        switch (I->op) {
        case OP_CMP: {
            val a = fetch(w, &w->ops[I->a], in), b = fetch(w, &w->ops[I->b], in);
            acc = compare(&a, I->cmp, &b);
            break;
        }
        case OP_IN: {
            val a = fetch(w, &w->ops[I->a], in);
            acc = false;
            for (uint32_t k = 0; k < I->n && !acc && a.kind != V_MISSING; k++) {
                val b = fetch(w, &w->ops[I->b + k], in);
                acc = compare(&a, C_EQ, &b);
            }
            break;
        }
        case OP_DEF: acc = fetch(w, &w->ops[I->a], in).kind != V_MISSING; break;
        case OP_TRUTH: {
            val a = fetch(w, &w->ops[I->a], in);
            acc = a.kind == V_BOOL && a.v.b;
            break;
        }
        case OP_CONST: acc = I->cmp != 0; break;
        case OP_NOT: acc = !acc; break;
        case OP_JT: if (acc) pc = I->a; break;
        case OP_JF: if (!acc) pc = I->a; break;
        }
    }
    return acc;
}

/* ---- compiler ----------------------------------------------------- */

enum {
    T_END, T_LP, T_RP, T_LB, T_RB, T_COMMA, T_DOT,
    T_EQ, T_NE, T_LT, T_LE, T_GT, T_GE,
    T_STR, T_INT, T_UINT, T_FLOAT, T_IDENT
};

typedef struct vec { void *p; size_t n, cap; } vec;

typedef struct parser {
    const char *s;
    size_t len, pos;
    unsigned depth;
    /* the current token */
    int tok;
    size_t tpos, tend;
    union { int64_t i; uint64_t u; double f; struct { uint32_t off, len; } s; } tv;
    vec insns, ops, steps;
    char *pool; /* capacity len: strings never decode longer than written */
    size_t npool;
    int rc;
    evs_where_error *err;
} parser;

static int fail(parser *p, int rc, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(parser *p, int rc, size_t pos, const char *fmt, ...)
{
    if (p->rc == 0) {
        p->rc = rc;
        if (p->err) {
            va_list ap;
            va_start(ap, fmt);
            p->err->pos = pos;
            vsnprintf(p->err->msg, sizeof p->err->msg, fmt, ap);
            va_end(ap);
        }
    }
    return p->rc;
}

static int vec_push(parser *p, vec *v, size_t esz, const void *e, uint32_t *idx)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 8;
        void *np = evs__realloc(v->p, cap * esz);
        if (!np)
            return fail(p, EVS_ENOMEM, 0, "out of memory");
        v->p = np;
        v->cap = cap;
    }
    memcpy((char *)v->p + v->n * esz, e, esz);
    if (idx)
        *idx = (uint32_t)v->n;
    v->n++;
    return 0;
}

static int emit(parser *p, int op, int cmp, uint32_t a, uint32_t b, uint32_t n, uint32_t *at)
{
    insn I = {.op = (uint8_t)op, .cmp = (uint8_t)cmp, .a = a, .b = b, .n = n};
    return vec_push(p, &p->insns, sizeof I, &I, at);
}

static insn *insn_at(parser *p, uint32_t k) { return (insn *)p->insns.p + k; }

/* A short quotation of the current token for messages. */
static const char *tok_desc(parser *p, char *buf, size_t cap)
{
    if (p->tok == T_END)
        return "end of expression";
    size_t n = p->tend - p->tpos;
    if (n > 24)
        n = 24;
    snprintf(buf, cap, "'%.*s'", (int)n, p->s + p->tpos);
    return buf;
}

static bool is_ident_start(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_digit(int c) { return c >= '0' && c <= '9'; }
static bool is_ident(int c) { return is_ident_start(c) || is_digit(c); }

static int hexval(int c)
{
    if (is_digit(c))
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Four hex digits at s[at..at+4), or -1. */
static long hex4(parser *p, size_t at)
{
    if (p->len - at < 4)
        return -1;
    long v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval((unsigned char)p->s[at + k]);
        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    return v;
}

static void put_utf8(parser *p, unsigned long c)
{
    char *o = p->pool + p->npool;
    if (c < 0x80) {
        o[0] = (char)c;
        p->npool += 1;
    } else if (c < 0x800) {
        o[0] = (char)(0xc0 | c >> 6);
        o[1] = (char)(0x80 | (c & 0x3f));
        p->npool += 2;
    } else if (c < 0x10000) {
        o[0] = (char)(0xe0 | c >> 12);
        o[1] = (char)(0x80 | (c >> 6 & 0x3f));
        o[2] = (char)(0x80 | (c & 0x3f));
        p->npool += 3;
    } else {
        o[0] = (char)(0xf0 | c >> 18);
        o[1] = (char)(0x80 | (c >> 12 & 0x3f));
        o[2] = (char)(0x80 | (c >> 6 & 0x3f));
        o[3] = (char)(0x80 | (c & 0x3f));
        p->npool += 4;
    }
}

static int lex_string(parser *p)
{
    char q = p->s[p->pos++];
    p->tv.s.off = (uint32_t)p->npool;
    for (;;) {
        if (p->pos >= p->len)
            return fail(p, EVS_EINVAL, p->tpos, "unterminated string");
        char c = p->s[p->pos];
        if (c == q) {
            p->pos++;
            break;
        }
        if (c != '\\') {
            p->pool[p->npool++] = c;
            p->pos++;
            continue;
        }
        size_t esc = p->pos++;
        if (p->pos >= p->len)
            return fail(p, EVS_EINVAL, p->tpos, "unterminated string");
        char e = p->s[p->pos++];
        switch (e) {
        case '"': case '\'': case '\\': case '/': p->pool[p->npool++] = e; break;
        case 'b': p->pool[p->npool++] = '\b'; break;
        case 'f': p->pool[p->npool++] = '\f'; break;
        case 'n': p->pool[p->npool++] = '\n'; break;
        case 'r': p->pool[p->npool++] = '\r'; break;
        case 't': p->pool[p->npool++] = '\t'; break;
        case 'u': {
            long c1 = hex4(p, p->pos);
            if (c1 < 0)
                return fail(p, EVS_EINVAL, esc, "\\u needs four hex digits");
            p->pos += 4;
            unsigned long cp = (unsigned long)c1;
            if (c1 >= 0xdc00 && c1 <= 0xdfff)
                return fail(p, EVS_EINVAL, esc, "unpaired surrogate in \\u escape");
            if (c1 >= 0xd800 && c1 <= 0xdbff) {
                long c2 = -1;
                if (p->len - p->pos >= 2 && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u')
                    c2 = hex4(p, p->pos + 2);
                if (c2 < 0xdc00 || c2 > 0xdfff)
                    return fail(p, EVS_EINVAL, esc, "unpaired surrogate in \\u escape");
                p->pos += 6;
                cp = 0x10000 + (((unsigned long)c1 - 0xd800) << 10) + ((unsigned long)c2 - 0xdc00);
            }
            put_utf8(p, cp);
            break;
        }
        default:
            return fail(p, EVS_EINVAL, esc, "unknown escape '\\%c'",
                        (e > 32 && e < 127) ? e : '?');
        }
    }
    p->tv.s.len = (uint32_t)(p->npool - p->tv.s.off);
    p->tok = T_STR;
    return 0;
}

static int lex_number(parser *p)
{
    size_t start = p->pos;
    bool neg = p->s[p->pos] == '-', flt = false;
    if (neg)
        p->pos++;
    if (p->pos >= p->len || !is_digit((unsigned char)p->s[p->pos]))
        return fail(p, EVS_EINVAL, start, "expected a digit after '-'");
    while (p->pos < p->len && is_digit((unsigned char)p->s[p->pos]))
        p->pos++;
    if (p->len - p->pos >= 2 && p->s[p->pos] == '.' && is_digit((unsigned char)p->s[p->pos + 1])) {
        flt = true;
        p->pos++;
        while (p->pos < p->len && is_digit((unsigned char)p->s[p->pos]))
            p->pos++;
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        flt = true;
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
            p->pos++;
        if (p->pos >= p->len || !is_digit((unsigned char)p->s[p->pos]))
            return fail(p, EVS_EINVAL, start, "malformed number");
        while (p->pos < p->len && is_digit((unsigned char)p->s[p->pos]))
            p->pos++;
    }
    if (p->pos < p->len && is_ident((unsigned char)p->s[p->pos]))
        return fail(p, EVS_EINVAL, start, "malformed number");
    if (flt) {
        char buf[80];
        size_t n = p->pos - start;
        if (n >= sizeof buf)
            return fail(p, EVS_EINVAL, start, "number too long");
        memcpy(buf, p->s + start, n);
        buf[n] = '\0';
        double d = strtod(buf, NULL);
        if (isinf(d))
            return fail(p, EVS_EINVAL, start, "number out of range");
        p->tok = T_FLOAT;
        p->tv.f = d;
        return 0;
    }
    uint64_t m = 0;
    for (size_t k = start + neg; k < p->pos; k++) {
        unsigned dg = (unsigned)(p->s[k] - '0');
        if (m > (UINT64_MAX - dg) / 10)
            return fail(p, EVS_EINVAL, start, "integer out of range");
        m = m * 10 + dg;
    }
    if (!neg || m == 0) {
        p->tok = T_UINT;
        p->tv.u = m;
    } else {
        if (m > (uint64_t)INT64_MAX + 1)
            return fail(p, EVS_EINVAL, start, "integer out of range");
        p->tok = T_INT;
        p->tv.i = m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m;
    }
    return 0;
}

/* Read the next token into p->tok. */
static int lex(parser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                               p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
    p->tpos = p->pos;
    int rc = 0;
    if (p->pos >= p->len) {
        p->tok = T_END;
        p->tend = p->pos;
        return 0;
    }
    unsigned char c = (unsigned char)p->s[p->pos];
    char n = p->pos + 1 < p->len ? p->s[p->pos + 1] : '\0';
    switch (c) {
    case '(': p->tok = T_LP; p->pos++; break;
    case ')': p->tok = T_RP; p->pos++; break;
    case '[': p->tok = T_LB; p->pos++; break;
    case ']': p->tok = T_RB; p->pos++; break;
    case ',': p->tok = T_COMMA; p->pos++; break;
    case '.': p->tok = T_DOT; p->pos++; break;
    case '=':
        if (n != '=')
            return fail(p, EVS_EINVAL, p->tpos, "'=' is not an operator; use '=='");
        p->tok = T_EQ;
        p->pos += 2;
        break;
    case '!':
        if (n != '=')
            return fail(p, EVS_EINVAL, p->tpos, "unexpected '!'; use 'not' or '!='");
        p->tok = T_NE;
        p->pos += 2;
        break;
    case '<':
    case '>':
        if (n == '=') {
            p->tok = c == '<' ? T_LE : T_GE;
            p->pos += 2;
        } else {
            p->tok = c == '<' ? T_LT : T_GT;
            p->pos++;
        }
        break;
    case '"':
    case '\'':
        rc = lex_string(p);
        break;
    default:
        if (c == '-' || is_digit(c)) {
            rc = lex_number(p);
        } else if (is_ident_start(c)) {
            while (p->pos < p->len && is_ident((unsigned char)p->s[p->pos]))
                p->pos++;
            p->tok = T_IDENT;
        } else if (c >= 0x20 && c < 0x7f) {
            return fail(p, EVS_EINVAL, p->tpos, "unexpected character '%c'", c);
        } else {
            return fail(p, EVS_EINVAL, p->tpos, "unexpected byte 0x%02x", c);
        }
    }
    p->tend = p->pos;
    return rc;
}

static bool is_kw(const parser *p, const char *kw)
{
    size_t n = strlen(kw);
    return p->tok == T_IDENT && p->tend - p->tpos == n && memcmp(p->s + p->tpos, kw, n) == 0;
}

static bool is_keyword(const parser *p)
{
    static const char *const kws[] = {"and", "or", "not", "in", "defined", NULL};
    for (int k = 0; kws[k]; k++)
        if (is_kw(p, kws[k]))
            return true;
    return false;
}

static int parse_or(parser *p);

static int expect(parser *p, int tok, const char *what)
{
    char b[40];
    if (p->tok != tok)
        return fail(p, EVS_EINVAL, p->tpos, "expected %s, found %s", what, tok_desc(p, b, sizeof b));
    return lex(p);
}

/* A literal at the current token into *o; false if it is not one. */
static bool literal(parser *p, operand *o)
{
    memset(o, 0, sizeof *o);
    o->root = R_LIT;
    switch (p->tok) {
    case T_STR: o->kind = V_STR; o->lit.s.off = p->tv.s.off; o->lit.s.len = p->tv.s.len; return true;
    case T_INT: o->kind = V_INT; o->lit.i = p->tv.i; return true;
    case T_UINT: o->kind = V_UINT; o->lit.u = p->tv.u; return true;
    case T_FLOAT: o->kind = V_FLOAT; o->lit.f = p->tv.f; return true;
    default: break;
    }
    if (is_kw(p, "true") || is_kw(p, "false")) {
        o->kind = V_BOOL;
        o->lit.b = is_kw(p, "true");
        return true;
    }
    if (is_kw(p, "null")) {
        o->kind = V_NULL;
        return true;
    }
    return false;
}

/* A value: a literal or a field (with its path); pushed, index in *idx. */
static int parse_operand(parser *p, uint32_t *idx)
{
    operand o;
    char b[40];
    if (literal(p, &o)) {
        if (lex(p) != 0)
            return p->rc;
        return vec_push(p, &p->ops, sizeof o, &o, idx);
    }
    if (p->tok != T_IDENT || is_keyword(p))
        return fail(p, EVS_EINVAL, p->tpos, "expected a value, found %s", tok_desc(p, b, sizeof b));
    size_t at = p->tpos;
    if (is_kw(p, "data") || is_kw(p, "properties"))
        o.root = R_DATA;
    else if (is_kw(p, "metadata"))
        o.root = R_META;
    else if (is_kw(p, "type"))
        o.root = R_TYPE;
    else if (is_kw(p, "topic"))
        o.root = R_TOPIC;
    else if (is_kw(p, "id"))
        o.root = R_ID;
    else if (is_kw(p, "timestamp"))
        o.root = R_TS;
    else
        return fail(p, EVS_EINVAL, at, "unknown identifier %s", tok_desc(p, b, sizeof b));
    size_t nlen = p->tend - p->tpos;
    o.step0 = (uint32_t)p->steps.n;
    if (lex(p) != 0)
        return p->rc;
    while (p->tok == T_LB || p->tok == T_DOT) {
        if (o.root != R_DATA && o.root != R_META)
            return fail(p, EVS_EINVAL, p->tpos, "'%.*s' has no fields", (int)nlen, p->s + at);
        step st = {.index = STEP_KEY};
        if (p->tok == T_DOT) {
            if (lex(p) != 0)
                return p->rc;
            if (p->tok != T_IDENT)
                return fail(p, EVS_EINVAL, p->tpos, "expected a field name after '.', found %s",
                            tok_desc(p, b, sizeof b));
            st.off = (uint32_t)p->npool;
            st.len = (uint32_t)(p->tend - p->tpos);
            memcpy(p->pool + p->npool, p->s + p->tpos, st.len);
            p->npool += st.len;
        } else {
            if (lex(p) != 0)
                return p->rc;
            if (p->tok == T_STR) {
                st.off = p->tv.s.off;
                st.len = p->tv.s.len;
            } else if (p->tok == T_UINT && p->tv.u < STEP_KEY) {
                st.index = (uint32_t)p->tv.u;
            } else {
                return fail(p, EVS_EINVAL, p->tpos, "expected a string key or an index, found %s",
                            tok_desc(p, b, sizeof b));
            }
            if (lex(p) != 0)
                return p->rc;
            if (p->tok != T_RB)
                return fail(p, EVS_EINVAL, p->tpos, "expected ']', found %s", tok_desc(p, b, sizeof b));
        }
        if (vec_push(p, &p->steps, sizeof st, &st, NULL) != 0 || lex(p) != 0)
            return p->rc;
        o.nsteps++;
    }
    return vec_push(p, &p->ops, sizeof o, &o, idx);
}

static int cmp_of(int tok)
{
    switch (tok) {
    case T_EQ: return C_EQ;
    case T_NE: return C_NE;
    case T_LT: return C_LT;
    case T_LE: return C_LE;
    case T_GT: return C_GT;
    case T_GE: return C_GE;
    }
    return -1;
}

/* `in [lit, ...]` after the lhs operand `lhs`; the token is '['. */
static int parse_list(parser *p, uint32_t lhs)
{
    char b[40];
    uint32_t first = (uint32_t)p->ops.n, n = 0;
    if (p->tok != T_LB)
        return fail(p, EVS_EINVAL, p->tpos, "expected '[' after 'in', found %s", tok_desc(p, b, sizeof b));
    if (lex(p) != 0)
        return p->rc;
    if (p->tok != T_RB) {
        for (;;) {
            operand o;
            if (!literal(p, &o))
                return fail(p, EVS_EINVAL, p->tpos, "expected a literal in the list, found %s",
                            tok_desc(p, b, sizeof b));
            if (vec_push(p, &p->ops, sizeof o, &o, NULL) != 0 || lex(p) != 0)
                return p->rc;
            n++;
            if (p->tok == T_RB)
                break;
            if (p->tok != T_COMMA)
                return fail(p, EVS_EINVAL, p->tpos, "expected ',' or ']', found %s",
                            tok_desc(p, b, sizeof b));
            if (lex(p) != 0)
                return p->rc;
        }
    }
    if (lex(p) != 0)
        return p->rc;
    return emit(p, OP_IN, 0, lhs, first, n, NULL);
}

static int enter(parser *p)
{
    if (++p->depth > EVS_WHERE_MAX_DEPTH)
        return fail(p, EVS_ETOOBIG, p->tpos, "nested deeper than %u", EVS_WHERE_MAX_DEPTH);
    return 0;
}

/* A predicate: (expr), defined(path), a comparison, `in`, a bare value. */
static int parse_pred(parser *p)
{
    char b[40];
    if (p->tok == T_LP) {
        if (enter(p) != 0 || lex(p) != 0 || parse_or(p) != 0)
            return p->rc;
        p->depth--;
        return expect(p, T_RP, "')'");
    }
    if (is_kw(p, "defined")) {
        uint32_t o;
        if (lex(p) != 0 || expect(p, T_LP, "'(' after 'defined'") != 0)
            return p->rc;
        size_t at = p->tpos;
        if (parse_operand(p, &o) != 0)
            return p->rc;
        if (((operand *)p->ops.p)[o].root == R_LIT)
            return fail(p, EVS_EINVAL, at, "defined() takes a field, not a literal");
        if (expect(p, T_RP, "')'") != 0)
            return p->rc;
        return emit(p, OP_DEF, 0, o, 0, 0, NULL);
    }
    size_t at = p->tpos;
    uint32_t lhs, rhs;
    if (parse_operand(p, &lhs) != 0)
        return p->rc;
    int c = cmp_of(p->tok);
    if (c >= 0) {
        if (lex(p) != 0 || parse_operand(p, &rhs) != 0)
            return p->rc;
        if (cmp_of(p->tok) >= 0)
            return fail(p, EVS_EINVAL, p->tpos, "comparisons do not chain; use 'and'");
        return emit(p, OP_CMP, c, lhs, rhs, 0, NULL);
    }
    if (is_kw(p, "in")) {
        if (lex(p) != 0)
            return p->rc;
        return parse_list(p, lhs);
    }
    if (is_kw(p, "not")) {
        size_t nat = p->tpos;
        if (lex(p) != 0)
            return p->rc;
        if (!is_kw(p, "in"))
            return fail(p, EVS_EINVAL, nat, "expected 'in' after 'not'");
        if (lex(p) != 0 || parse_list(p, lhs) != 0)
            return p->rc;
        return emit(p, OP_NOT, 0, 0, 0, 0, NULL);
    }
    const operand *o = &((const operand *)p->ops.p)[lhs];
    if (o->root == R_LIT) {
        if (o->kind == V_BOOL)
            return emit(p, OP_CONST, o->lit.b, 0, 0, 0, NULL);
        return fail(p, EVS_EINVAL, at, "expected a comparison after the literal, found %s",
                    tok_desc(p, b, sizeof b));
    }
    return emit(p, OP_TRUTH, 0, lhs, 0, 0, NULL);
}

static int parse_not(parser *p)
{
    if (!is_kw(p, "not"))
        return parse_pred(p);
    if (enter(p) != 0 || lex(p) != 0 || parse_not(p) != 0)
        return p->rc;
    p->depth--;
    return emit(p, OP_NOT, 0, 0, 0, 0, NULL);
}

/* Patch a chain of jumps linked through their `a` fields to `to`. */
static void patch(parser *p, uint32_t head, uint32_t to)
{
    while (head != UINT32_MAX) {
        insn *I = insn_at(p, head);
        head = I->a;
        I->a = to;
    }
}

static int parse_and(parser *p)
{
    uint32_t chain = UINT32_MAX, at;
    if (parse_not(p) != 0)
        return p->rc;
    while (is_kw(p, "and")) {
        if (emit(p, OP_JF, 0, chain, 0, 0, &at) != 0 || lex(p) != 0 || parse_not(p) != 0)
            return p->rc;
        chain = at;
    }
    patch(p, chain, (uint32_t)p->insns.n);
    return 0;
}

static int parse_or(parser *p)
{
    uint32_t chain = UINT32_MAX, at;
    if (parse_and(p) != 0)
        return p->rc;
    while (is_kw(p, "or")) {
        if (emit(p, OP_JT, 0, chain, 0, 0, &at) != 0 || lex(p) != 0 || parse_and(p) != 0)
            return p->rc;
        chain = at;
    }
    patch(p, chain, (uint32_t)p->insns.n);
    return 0;
}

static size_t round8(size_t n) { return (n + 7) & ~(size_t)7; }

/* One block: header, instructions, operands, steps, pool. */
static int pack(parser *p, evs_where **out)
{
    size_t oi = round8(sizeof(evs_where));
    size_t oo = oi + round8(p->insns.n * sizeof(insn));
    size_t os = oo + round8(p->ops.n * sizeof(operand));
    size_t op = os + round8(p->steps.n * sizeof(step));
    char *blk = evs__malloc(op + p->npool + 1);
    if (!blk)
        return fail(p, EVS_ENOMEM, 0, "out of memory");
    evs_where *w = (evs_where *)(void *)blk;
    if (p->insns.n)
        memcpy(blk + oi, p->insns.p, p->insns.n * sizeof(insn));
    if (p->ops.n)
        memcpy(blk + oo, p->ops.p, p->ops.n * sizeof(operand));
    if (p->steps.n)
        memcpy(blk + os, p->steps.p, p->steps.n * sizeof(step));
    if (p->npool)
        memcpy(blk + op, p->pool, p->npool);
    w->ninsn = (uint32_t)p->insns.n;
    w->insns = (const insn *)(void *)(blk + oi);
    w->ops = (const operand *)(void *)(blk + oo);
    w->steps = (const step *)(void *)(blk + os);
    w->pool = blk + op;
    *out = w;
    return 0;
}

int evs_where_compile(evs_where **out, const char *expr, size_t len, evs_where_error *err)
{
    parser p = {.s = expr, .len = len, .err = err};
    char b[40];
    if (err) {
        err->pos = 0;
        err->msg[0] = '\0';
    }
    if (out)
        *out = NULL;
    if (!out || (!expr && len > 0))
        return fail(&p, EVS_EINVAL, 0, "%s is NULL", out ? "expr" : "out");
    if (len > EVS_WHERE_MAX_LEN)
        return fail(&p, EVS_ETOOBIG, EVS_WHERE_MAX_LEN, "expression longer than %u bytes",
                    EVS_WHERE_MAX_LEN);
    p.pool = evs__malloc(len ? len : 1);
    if (!p.pool)
        return fail(&p, EVS_ENOMEM, 0, "out of memory");
    if (lex(&p) == 0) {
        if (p.tok == T_END)
            fail(&p, EVS_EINVAL, 0, "empty expression");
        else if (parse_or(&p) == 0 && p.tok != T_END) {
            if (p.tok == T_RP)
                fail(&p, EVS_EINVAL, p.tpos, "unbalanced ')'");
            else
                fail(&p, EVS_EINVAL, p.tpos, "expected 'and', 'or' or the end, found %s",
                     tok_desc(&p, b, sizeof b));
        }
    }
    if (p.rc == 0)
        pack(&p, out);
    evs__free(p.insns.p);
    evs__free(p.ops.p);
    evs__free(p.steps.p);
    evs__free(p.pool);
    return p.rc;
}

bool evs_where_match(const evs_where *w, const evs_event *ev)
{
    if (!w || !ev)
        return false;
    evs_where_input in = {0};
    in.type_name = evs_event_type_name(ev);
    in.type_name_len = in.type_name ? strlen(in.type_name) : 0;
    in.topic = evs_event_topic(ev);
    in.topic_len = in.topic ? strlen(in.topic) : 0;
    in.id = evs_event_id(ev);
    in.timestamp = evs_event_timestamp(ev);
    in.content = evs_event_content(ev);
    in.data = evs_event_data(ev, &in.len);
    in.meta = evs_event_meta(ev, &in.meta_len);
    return evs__where_eval(w, &in);
}

bool evs_where_filter(const evs_event *ev, void *user)
{
    return evs_where_match(user, ev);
}

void evs_where_destroy(evs_where *w)
{
    evs__free(w);
}
