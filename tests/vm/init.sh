#!/bin/busybox sh
# /init of the VM tier's guest (tests/vm/machine.py puts it in the initramfs,
# beside a static busybox and the modules listed in /modules/order).
#
# The host's root, read-only over 9p, becomes the guest's root: its Python,
# virtualenv and checkout run as they are.  The guest writes only in tmpfs
# of its own (/tmp, /run, /var/tmp) and in the job directory, a second 9p
# share at the same path as on the host.  cgroup2 alone, with the memory and
# pids controllers: a pure v2 hierarchy.
#
# Then it serves jobs: the host drops N.job (a shell script) into the job
# directory; the guest runs it in the new root, as root, in the root cgroup,
# and writes back N.out (stdout and stderr) and N.rc (its exit status).
# Jobs run side by side.  A job that starts with "#poweroff" ends the guest.
/bin/busybox mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
mount -t proc proc /proc

fail() {
    echo "navi-vm: $*"
    poweroff -f
}

for module in $(cat /modules/order); do
    insmod "/modules/$module.ko" || fail "cannot load $module"
done
for word in $(cat /proc/cmdline); do
    case $word in
        navi.jobs=*) jobs=${word#*=} ;;
        navi.closed=*) closed=${word#*=} ;;
        navi.expose=*) expose=${word#*=} ;;
        navi.keep=*) keep=${word#*=} ;;
    esac
done
[ -n "$jobs" ] || fail "no navi.jobs= on the kernel command line"
share=trans=virtio,version=9p2000.L,msize=524288
# cache=loose: the host changes nothing the guest reads there while it runs.
mount -t 9p -o "$share,ro,cache=loose" host /newroot || fail "cannot mount the host's root"

# A directory closed to other users (the host's Python under /root) becomes
# a tmpfs holding only the paths beneath it that supervisord's user needs
# (navi.expose), bound back from the host.
IFS=,
n=0
for path in $expose; do
    mkdir -p "/keep/$n" && mount -o bind "/newroot$path" "/keep/$n" || fail "cannot keep $path"
    n=$((n + 1))
done
for dir in $closed; do
    mount -t tmpfs -o mode=0755 tmpfs "/newroot$dir" || fail "cannot open $dir"
done
n=0
for path in $expose; do
    mkdir -p "/newroot$path" && mount -o bind "/keep/$n" "/newroot$path" || fail "cannot expose $path"
    n=$((n + 1))
done
unset IFS

# The checkout and its virtualenv stay where they are, if they are in one
# of the directories the guest gets a tmpfs of its own for (navi.keep).
IFS=,
n=0
for path in $keep; do
    mkdir -p "/hold/$n" && mount -o bind "/newroot$path" "/hold/$n" || fail "cannot hold $path"
    n=$((n + 1))
done
unset IFS
for dir in tmp run var/tmp; do
    mount -t tmpfs -o mode=1777 tmpfs "/newroot/$dir" || fail "cannot mount a tmpfs on /$dir"
done
IFS=,
n=0
for path in $keep; do
    mkdir -p "/newroot$path" && mount -o bind "/hold/$n" "/newroot$path" || fail "cannot keep $path"
    n=$((n + 1))
done
unset IFS
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup || fail "cannot mount cgroup2"
echo "+memory +pids" >/newroot/sys/fs/cgroup/cgroup.subtree_control || fail "no memory or pids controller"
mkdir -p "/newroot$jobs"
mount -t 9p -o "$share" jobs "/newroot$jobs" || fail "cannot mount the job directory"

cd "/newroot$jobs" || fail "no job directory"
echo "$(uname -r)" >ready
while :; do
    for job in *.job; do
        [ -e "$job" ] || continue
        n=${job%.job}
        mv "$job" "$n.taken"
        [ "$(head -c 9 "$n.taken")" = "#poweroff" ] && poweroff -f
        (
            chroot /newroot /bin/sh "$jobs/$n.taken" >"$n.out" 2>&1
            echo $? >"$n.rc.part"
            mv "$n.rc.part" "$n.rc"
        ) &
    done
    sleep 0.2
done
