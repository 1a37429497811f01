"""MemoryManager.subscribe: observers hear of every public operation, in
order, with its outcome, and never need to subclass the manager."""

from helpers import FULL, tiny_plan

from jenga.memory.manager import MemoryManager
from jenga.memory.observe import MemoryObserver


class Log(MemoryObserver):
    def __init__(self):
        self.events = []

    def added(self, req_id, tokens, prompt_len, images, salt, model):
        self.events.append(("added", req_id, prompt_len))

    def released(self, req_id):
        self.events.append(("released", req_id))

    def removed(self, req_id):
        self.events.append(("removed", req_id))

    def allocated(self, req_id, start, end, hit_tokens, actions):
        self.events.append(("allocated", req_id, start, end, hit_tokens, actions is not None))

    def room_checked(self, num_tokens, encoder_tokens, chunk, room):
        self.events.append(("room", num_tokens, room))


def test_observer_sees_each_operation_and_its_outcome():
    m = MemoryManager(tiny_plan([(FULL, 1, 2)], 3, base=2), enable_prefix_caching=False)   # 3 pages of 2 tokens
    log, quiet = Log(), MemoryObserver()
    m.subscribe(log)
    m.subscribe(quiet)                    # the no-op base is a valid observer
    m.add("a", list(range(4)), 4)
    m.add("b", list(range(4)), 4)
    m.tick()
    assert m.allocate("a", 0, 4) is not None
    m.commit("a", 4)
    assert m.has_room_for(4, 0) is False   # one page left, b needs two
    assert m.allocate("b", 0, 4) is None
    m.release("a")
    m.remove("b")
    assert log.events == [("added", "a", 4), ("added", "b", 4), ("allocated", "a", 0, 4, 0, True),
                          ("room", 4, False), ("allocated", "b", 0, 4, 0, False), ("released", "a"),
                          ("released", "b"), ("removed", "b")]
    m.check_invariants()
