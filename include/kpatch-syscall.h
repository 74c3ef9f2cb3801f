/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kpatch-syscall.h as klpx provides it: KPATCH_SYSCALL_DEFINEn(name, ...) defines the new version of
 * a system call with the architecture's own wrappers (__x64_sys_<name>, __s390x_sys_<name>, ...) but
 * without the tracing metadata SYSCALL_DEFINEn adds, which would be new static data for every syscall
 * the patch touches.
 */
#ifndef __KPATCH_SYSCALL_H_
#define __KPATCH_SYSCALL_H_

#include <linux/syscalls.h>

#define KPATCH_SYSCALL_DEFINE0(sname)	SYSCALL_DEFINE0(sname)
#define KPATCH_SYSCALL_DEFINE1(name, ...) __SYSCALL_DEFINEx(1, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE2(name, ...) __SYSCALL_DEFINEx(2, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE3(name, ...) __SYSCALL_DEFINEx(3, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE4(name, ...) __SYSCALL_DEFINEx(4, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE5(name, ...) __SYSCALL_DEFINEx(5, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE6(name, ...) __SYSCALL_DEFINEx(6, _##name, __VA_ARGS__)

#endif /* __KPATCH_SYSCALL_H_ */
