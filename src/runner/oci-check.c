/* runtara-oci-check: the program the daemon runs in a container at start-up to prove that the OCI
 * runtime works on this host (oci_runtime_check()). It does nothing and exits 0: anything that
 * goes wrong is the runtime's, and it says so. Linked statically, as every program in a container
 * must be (the root file system holds nothing else). */
int main(void)
{
    return 0;
}
