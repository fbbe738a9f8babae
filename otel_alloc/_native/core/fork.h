/*
 * The fork handler (fork.c), registered once by the first install.
 */
#ifndef OA_FORK_H
#define OA_FORK_H

#pragma GCC visibility push(hidden)

void oa_register_fork_handlers(void);

#pragma GCC visibility pop

#endif
