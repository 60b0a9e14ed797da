/* placeholder */ typedef int placeholder_vmx_lifecycle;
