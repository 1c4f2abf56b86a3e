/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/* fake include/uapi/linux/mman.h */
#ifndef _UAPI_LINUX_MMAN_H
#define _UAPI_LINUX_MMAN_H
#define MADV_HUGEPAGE	14
#define MADV_COLLAPSE	25
#endif
