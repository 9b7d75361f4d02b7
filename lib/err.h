/*
 * err.h - the error convention of splitinfer's library.
 *
 * Every fallible function in lib/ returns 0 on success and -1 on failure (or
 * NULL for constructors) and, on failure, writes one human-readable sentence
 * into the caller's si_err_t. Nothing in lib/ prints or exits: the caller
 * decides what to show and how to exit. `err` may always be NULL.
 */
#ifndef SI_ERR_H
#define SI_ERR_H

#include <stddef.h>

#define SI_ERR_MAX 512 /* bytes, including the NUL; longer messages are cut */

typedef struct si_err {
    char msg[SI_ERR_MAX]; /* NUL-terminated; "" until an error is set */
} si_err_t;

/* Formats a message into err (if not NULL). Always returns -1 so a caller can
 * write `return si_err_set(err, "...")`. */
int si_err_set(si_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to the message already in err (context on the way up). */
int si_err_prefix(si_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
