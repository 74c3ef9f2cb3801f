/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kpatch-macros.h as klpx provides it: patches written for kpatch-build that include this header and
 * use its KPATCH_* macros build unchanged with klpx.
 *
 * Callbacks become static functions named klpx_<kind>_cb_<fn>, which klpx finds in the patched object
 * and wires into the klp_object of the code they were compiled with (vmlinux or the module). Static, so
 * that several files of one patch may use the same callback names, as kpatch's own tests do.
 */
#ifndef __KPATCH_MACROS_H_
#define __KPATCH_MACROS_H_

#include <linux/compiler.h>
#include <linux/printk.h>
#include <linux/livepatch.h>

typedef struct klp_object patch_object;

#define KPATCH_PRE_PATCH_CALLBACK(_fn)						\
	static int klpx_pre_patch_cb_##_fn(patch_object *obj);			\
	static __used int klpx_pre_patch_cb_##_fn(patch_object *obj) { return _fn(obj); }

#define KPATCH_POST_PATCH_CALLBACK(_fn)						\
	static void klpx_post_patch_cb_##_fn(patch_object *obj);			\
	static __used void klpx_post_patch_cb_##_fn(patch_object *obj) { _fn(obj); }

#define KPATCH_PRE_UNPATCH_CALLBACK(_fn)					\
	static void klpx_pre_unpatch_cb_##_fn(patch_object *obj);			\
	static __used void klpx_pre_unpatch_cb_##_fn(patch_object *obj) { _fn(obj); }

#define KPATCH_POST_UNPATCH_CALLBACK(_fn)					\
	static void klpx_post_unpatch_cb_##_fn(patch_object *obj);			\
	static __used void klpx_post_unpatch_cb_##_fn(patch_object *obj) { _fn(obj); }

/*
 * kpatch-build's ignore and force markers. klpx accepts them so that such patches compile; it does not
 * act on them (a changed function is always patched, and unsafe changes are refused, not forced).
 */
#define KPATCH_IGNORE_SECTION(_sec)
#define KPATCH_IGNORE_FUNCTION(_fn)
#define KPATCH_FORCE_UNSAFE(_fn)

#define KPATCH_PRINTK(_fmt, ...) printk(_fmt, ##__VA_ARGS__)

#endif /* __KPATCH_MACROS_H_ */
