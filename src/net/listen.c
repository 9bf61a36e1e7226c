/* Listening sockets, bound by the master before it starts the workers. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net.h"

socklen_t listen_sockaddr(const char *text, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, text, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		return sizeof(*s4);
	}
	if (inet_pton(AF_INET6, text, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		return sizeof(*s6);
	}
	return 0;
}

int listen_bind(const char *addr, uint16_t port, int backlog, struct err *e)
{
	struct sockaddr_storage ss;
	socklen_t sl = listen_sockaddr(addr, port, &ss);
	if (sl == 0)
		return err_set(e, "%s: not an IPv4 or IPv6 address", addr);
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return err_set(e, "socket: %s", strerror(errno));
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0) {
		int er = errno;
		close(fd);
		if (ss.ss_family == AF_INET6)
			return err_set(e, "bind [%s]:%u: %s", addr, port, strerror(er));
		return err_set(e, "bind %s:%u: %s", addr, port, strerror(er));
	}
	if (listen(fd, backlog) < 0) {
		int er = errno;
		close(fd);
		return err_set(e, "listen %s port %u: %s", addr, port, strerror(er));
	}
	return fd;
}

int listen_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* v4 in host order, or false; an IPv4-mapped IPv6 address is its IPv4
 * address, since a connection to it reaches the IPv4 listeners. */
static bool listen_v4_of(const struct sockaddr_storage *ss, uint32_t *v4)
{
	if (ss->ss_family == AF_INET) {
		*v4 = ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr);
		return true;
	}
	const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
	if (ss->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(a)) {
		uint32_t w;
		memcpy(&w, &a->s6_addr[12], 4);
		*v4 = ntohl(w);
		return true;
	}
	return false;
}

/* Is the address one of this host's?  All of 127.0.0.0/8 is (Linux
 * routes it to lo), as are 0.0.0.0 and :: (a connection to them reaches
 * the host itself) and every address of an interface. */
static bool listen_addr_is_local(bool is4, uint32_t v4, const struct in6_addr *v6,
				 struct ifaddrs **ifa)
{
	if (is4 && ((v4 >> 24) == 127 || v4 == 0))
		return true;
	if (!is4 && (IN6_IS_ADDR_LOOPBACK(v6) || IN6_IS_ADDR_UNSPECIFIED(v6)))
		return true;
	/* Fetched once for all the addresses a caller asks about. */
	if (!*ifa && getifaddrs(ifa) < 0) {
		*ifa = NULL;
		return false;
	}
	bool hit = false;
	for (struct ifaddrs *i = *ifa; i && !hit; i = i->ifa_next) {
		if (!i->ifa_addr)
			continue;
		if (is4 && i->ifa_addr->sa_family == AF_INET)
			hit = ntohl(((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr) == v4;
		else if (!is4 && i->ifa_addr->sa_family == AF_INET6)
			hit = memcmp(&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, v6,
				     sizeof(*v6)) == 0;
	}
	return hit;
}

bool listen_is_own(const struct sockaddr_storage *ss, char *const *ifaces, size_t n_ifaces,
		   const uint16_t *ports, size_t n_ports, struct ifaddrs **ifa)
{
	uint16_t port;
	if (ss->ss_family == AF_INET)
		port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
	else if (ss->ss_family == AF_INET6)
		port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	else
		return false;
	bool listened = false;
	for (size_t i = 0; i < n_ports && !listened; i++)
		listened = ports[i] == port;
	if (!listened)
		return false;

	uint32_t v4 = 0;
	bool is4 = listen_v4_of(ss, &v4);
	const struct in6_addr *v6 = &((const struct sockaddr_in6 *)ss)->sin6_addr;
	static char *const wild[] = { "0.0.0.0", "::" };
	if (n_ifaces == 0) {
		ifaces = wild;
		n_ifaces = 2;
	}
	for (size_t i = 0; i < n_ifaces; i++) {
		struct in_addr l4;
		struct in6_addr l6;
		if (is4 && inet_pton(AF_INET, ifaces[i], &l4) == 1) {
			uint32_t l = ntohl(l4.s_addr);
			if (l == v4 || (l == 0 && listen_addr_is_local(true, v4, NULL, ifa)))
				return true;
		} else if (!is4 && inet_pton(AF_INET6, ifaces[i], &l6) == 1) {
			if (memcmp(&l6, v6, sizeof(l6)) == 0 ||
			    (IN6_IS_ADDR_UNSPECIFIED(&l6) && listen_addr_is_local(false, 0, v6, ifa)))
				return true;
		}
	}
	return false;
}
