/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kpatch-syscall.h as klpx provides it: KPATCH_SYSCALL_DEFINEn(name, ...) defines the new version of a
 * system call. It expands like the architecture's SYSCALL_DEFINEn, with two differences that make the
 * change live-patchable:
 * - the body goes into __klpx_do_sys_<name>, a new function, instead of __do_sys_<name>: the latter is
 *   `static inline`, hence notrace, and a changed notrace function cannot be patched; the traceable
 *   entry wrapper (__x64_sys_<name>, __s390x_sys_<name>, __arm64_sys_<name>, sys_<name>) changes instead;
 * - no tracing metadata (new static data for every syscall the patch touches). The x86 entry stubs
 *   are the kernel's own and keep their error-injection entry where that is configured.
 */
#ifndef __KPATCH_SYSCALL_H_
#define __KPATCH_SYSCALL_H_

#include <linux/syscalls.h>

#if defined(CONFIG_X86_64)

#define __KPATCH_SYSCALL_DEFINEx(x, name, ...)					\
	static long __se_sys##name(__MAP(x,__SC_LONG,__VA_ARGS__));		\
	static inline long __klpx_do_sys##name(__MAP(x,__SC_DECL,__VA_ARGS__));\
	__X64_SYS_STUBx(x, name, __VA_ARGS__)					\
	__IA32_SYS_STUBx(x, name, __VA_ARGS__)					\
	static long __se_sys##name(__MAP(x,__SC_LONG,__VA_ARGS__))		\
	{									\
		long ret = __klpx_do_sys##name(__MAP(x,__SC_CAST,__VA_ARGS__));\
		__MAP(x,__SC_TEST,__VA_ARGS__);					\
		__PROTECT(x, ret,__MAP(x,__SC_ARGS,__VA_ARGS__));		\
		return ret;							\
	}									\
	static inline long __klpx_do_sys##name(__MAP(x,__SC_DECL,__VA_ARGS__))

#elif defined(CONFIG_S390)

#ifdef CONFIG_COMPAT
/* The 31-bit entry, calling the renamed body as the kernel's __S390_SYS_STUBx calls __do_sys. */
#define __KPATCH_S390_SYS_STUBx(x, name, ...)					\
	long __s390_sys##name(struct pt_regs *regs);				\
	static inline long ___se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__));	\
	long __s390_sys##name(struct pt_regs *regs)				\
	{									\
		return ___se_sys##name(SC_S390_REGS_TO_ARGS(x, __VA_ARGS__));	\
	}									\
	static inline long ___se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__))	\
	{									\
		__MAP(x, __SC_TEST, __VA_ARGS__);				\
		return __klpx_do_sys##name(__MAP(x, __SC_COMPAT_CAST, __VA_ARGS__));\
	}
#else
#define __KPATCH_S390_SYS_STUBx(x, name, ...)
#endif

#define __KPATCH_SYSCALL_DEFINEx(x, name, ...)					\
	long __s390x_sys##name(struct pt_regs *regs);				\
	static inline long __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__));	\
	static inline long __klpx_do_sys##name(__MAP(x, __SC_DECL, __VA_ARGS__));\
	__KPATCH_S390_SYS_STUBx(x, name, __VA_ARGS__);				\
	long __s390x_sys##name(struct pt_regs *regs)				\
	{									\
		return __se_sys##name(SC_S390_REGS_TO_ARGS(x, __VA_ARGS__));	\
	}									\
	static inline long __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__))	\
	{									\
		__MAP(x, __SC_TEST, __VA_ARGS__);				\
		return __klpx_do_sys##name(__MAP(x, __SC_CAST, __VA_ARGS__));	\
	}									\
	static inline long __klpx_do_sys##name(__MAP(x, __SC_DECL, __VA_ARGS__))

#elif defined(CONFIG_ARM64)

#define __KPATCH_SYSCALL_DEFINEx(x, name, ...)					\
	asmlinkage long __arm64_sys##name(const struct pt_regs *regs);		\
	static long __se_sys##name(__MAP(x,__SC_LONG,__VA_ARGS__));		\
	static inline long __klpx_do_sys##name(__MAP(x,__SC_DECL,__VA_ARGS__));\
	asmlinkage long __arm64_sys##name(const struct pt_regs *regs)		\
	{									\
		return __se_sys##name(SC_ARM64_REGS_TO_ARGS(x,__VA_ARGS__));	\
	}									\
	static long __se_sys##name(__MAP(x,__SC_LONG,__VA_ARGS__))		\
	{									\
		long ret = __klpx_do_sys##name(__MAP(x,__SC_CAST,__VA_ARGS__));\
		__MAP(x,__SC_TEST,__VA_ARGS__);					\
		__PROTECT(x, ret,__MAP(x,__SC_ARGS,__VA_ARGS__));		\
		return ret;							\
	}									\
	static inline long __klpx_do_sys##name(__MAP(x,__SC_DECL,__VA_ARGS__))

#elif defined(CONFIG_PPC64) && defined(CONFIG_ARCH_HAS_SYSCALL_WRAPPER)

#define __KPATCH_SYSCALL_DEFINEx(x, name, ...)					\
	long sys##name(const struct pt_regs *regs);				\
	static long __se_sys##name(__MAP(x,__SC_LONG,__VA_ARGS__));		\
	static inline long __klpx_do_sys##name(__MAP(x,__SC_DECL,__VA_ARGS__));\
	long sys##name(const struct pt_regs *regs)				\
	{									\
		return __se_sys##name(SC_POWERPC_REGS_TO_ARGS(x,__VA_ARGS__));	\
	}									\
	static long __se_sys##name(__MAP(x,__SC_LONG,__VA_ARGS__))		\
	{									\
		long ret = __klpx_do_sys##name(__MAP(x,__SC_CAST,__VA_ARGS__));\
		__MAP(x,__SC_TEST,__VA_ARGS__);					\
		__PROTECT(x, ret,__MAP(x,__SC_ARGS,__VA_ARGS__));		\
		return ret;							\
	}									\
	static inline long __klpx_do_sys##name(__MAP(x,__SC_DECL,__VA_ARGS__))

#else
/* The generic wrapper, without its metadata. */
#define __KPATCH_SYSCALL_DEFINEx(x, name, ...) __SYSCALL_DEFINEx(x, name, __VA_ARGS__)
#endif

#define KPATCH_SYSCALL_DEFINE1(name, ...) __KPATCH_SYSCALL_DEFINEx(1, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE2(name, ...) __KPATCH_SYSCALL_DEFINEx(2, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE3(name, ...) __KPATCH_SYSCALL_DEFINEx(3, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE4(name, ...) __KPATCH_SYSCALL_DEFINEx(4, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE5(name, ...) __KPATCH_SYSCALL_DEFINEx(5, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE6(name, ...) __KPATCH_SYSCALL_DEFINEx(6, _##name, __VA_ARGS__)

#endif /* __KPATCH_SYSCALL_H_ */
