/* SPDX-License-Identifier: GPL-2.0 */
/*
 * klpx.h: what a patch author may use in a patch built with klpx.
 *
 * - Callbacks: KLPX_PRE_PATCH_CALLBACK(fn) (int fn(struct klp_object *)), KLPX_POST_PATCH_CALLBACK(fn),
 *   KLPX_PRE_UNPATCH_CALLBACK(fn), KLPX_POST_UNPATCH_CALLBACK(fn) (void fn(struct klp_object *)).
 *   They run for the object (vmlinux or module) of the file they are written in.
 * - Shadow variables: the kernel's klp_shadow_get/alloc/get_or_alloc/free/free_all, from
 *   <linux/livepatch.h>, included here.
 * - System calls: KLPX_SYSCALL_DEFINEn(name, ...), as SYSCALL_DEFINEn.
 * The kpatch-build spellings (KPATCH_*) work too.
 */
#ifndef __KLPX_H_
#define __KLPX_H_

#include "kpatch-macros.h"
#include "kpatch-syscall.h"

#define KLPX_PRE_PATCH_CALLBACK(fn)	KPATCH_PRE_PATCH_CALLBACK(fn)
#define KLPX_POST_PATCH_CALLBACK(fn)	KPATCH_POST_PATCH_CALLBACK(fn)
#define KLPX_PRE_UNPATCH_CALLBACK(fn)	KPATCH_PRE_UNPATCH_CALLBACK(fn)
#define KLPX_POST_UNPATCH_CALLBACK(fn)	KPATCH_POST_UNPATCH_CALLBACK(fn)

#define KLPX_SYSCALL_DEFINE1		KPATCH_SYSCALL_DEFINE1
#define KLPX_SYSCALL_DEFINE2		KPATCH_SYSCALL_DEFINE2
#define KLPX_SYSCALL_DEFINE3		KPATCH_SYSCALL_DEFINE3
#define KLPX_SYSCALL_DEFINE4		KPATCH_SYSCALL_DEFINE4
#define KLPX_SYSCALL_DEFINE5		KPATCH_SYSCALL_DEFINE5
#define KLPX_SYSCALL_DEFINE6		KPATCH_SYSCALL_DEFINE6

#endif /* __KLPX_H_ */
