#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kobject.h>
#include <linux/sysfs.h>

static struct kobject *hello_kobj;

static ssize_t answer_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", 42);
}

static struct kobj_attribute answer_attr = __ATTR_RO(answer);

static int __init hello_init(void)
{
	hello_kobj = kobject_create_and_add("klpx_oot", kernel_kobj);
	if (!hello_kobj)
		return -ENOMEM;
	return sysfs_create_file(hello_kobj, &answer_attr.attr);
}

static void __exit hello_exit(void)
{
	kobject_put(hello_kobj);
}

module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
