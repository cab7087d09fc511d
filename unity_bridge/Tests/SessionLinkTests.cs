// SessionLink.cs: the session protocol's decisions, driven by plain inputs, then the Join
// streams a real server sent (tests/vectors/session_stream.json) with what the Python
// SDK decided at each message.
using System.Collections.Generic;
using NUnit.Framework;

namespace Holo.Bridge.Core.Tests
{
    [TestFixture]
    public class SessionLinkTests
    {
        static SessionSnapshot Snapshot(long seq, params Participant[] participants)
        {
            var snapshot = new SessionSnapshot { Seq = seq, TNs = seq * 1000 };
            snapshot.Participants.AddRange(participants);
            return snapshot;
        }

        static SessionEvent Joined(long seq, string pid, string role = Roles.Expert)
        {
            return SessionEvent.Joined(seq, seq * 1000, pid, new Participant(pid, role, pid));
        }

        SessionLink Accepted(long seq = 1)
        {
            var link = new SessionLink();
            link.OnAccepted("me", 2000, Snapshot(seq, new Participant("me", Roles.Observer, "Me")), 0.0);
            return link;
        }

        [Test]
        public void TheFirstJoinAsksForASnapshotThenJoinsResumeFromTheLastSeqApplied()
        {
            var link = new SessionLink();
            Assert.AreEqual("", link.JoinParameters().ParticipantId);
            Assert.AreEqual(0, link.JoinParameters().ResumeFromSeq);
            link.OnAccepted("p-7", 1500, Snapshot(4, new Participant("p-7", Roles.Observer, "")), 0.0);
            Assert.AreEqual(EventOutcome.Applied, link.OnEvent(Joined(5, "e"), 0.1));
            Assert.AreEqual("p-7", link.JoinParameters().ParticipantId);
            Assert.AreEqual(5, link.JoinParameters().ResumeFromSeq);
            Assert.AreEqual(1.5, link.HeartbeatIntervalS);
        }

        [Test]
        public void AResumeWithoutASnapshotKeepsTheState()
        {
            SessionLink link = Accepted(3);
            link.OnEvent(Joined(4, "e"), 0.1);
            int resets = 0;
            link.Reset += (state, t) => resets++;
            link.OnAccepted("me", 2000, null, 1.0);
            Assert.AreEqual(4, link.State.Seq);
            Assert.AreEqual(0, resets);
            Assert.AreEqual(EventOutcome.Applied, link.OnEvent(Joined(5, "f"), 1.1));
        }

        [Test]
        public void ARepeatIsSkippedAndAGapIsNeverFoldedPast()
        {
            SessionLink link = Accepted(3);
            var applied = new List<long>();
            link.Applied += (e, state) => applied.Add(e.Seq);
            Assert.AreEqual(EventOutcome.Applied, link.OnEvent(Joined(4, "a"), 0));
            Assert.AreEqual(EventOutcome.Repeat, link.OnEvent(Joined(4, "a"), 0));
            Assert.AreEqual(EventOutcome.Repeat, link.OnEvent(Joined(2, "z"), 0));
            Assert.AreEqual(EventOutcome.Gap, link.OnEvent(Joined(6, "c"), 0));
            Assert.AreEqual(4, link.State.Seq);
            CollectionAssert.AreEqual(new long[] { 4 }, applied);
            CollectionAssert.AreEqual(new[] { "seq 4 after 4", "seq 2 after 4", "seq 6 after 4" }, link.Errors);
            Assert.AreEqual(4, link.JoinParameters().ResumeFromSeq);
        }

        [Test]
        public void ABatchFoldsUpToItsFirstGap()
        {
            SessionLink link = Accepted(1);
            EventOutcome outcome = link.OnEvents(new[] { Joined(2, "a"), Joined(3, "b"), Joined(5, "d"), Joined(4, "c") }, 0);
            Assert.AreEqual(EventOutcome.Gap, outcome);
            Assert.AreEqual(3, link.State.Seq);
            Assert.IsFalse(link.State.Participants.ContainsKey("c"), "nothing after the gap");
        }

        [Test]
        public void AResyncReplacesTheState()
        {
            SessionLink link = Accepted(1);
            link.OnEvent(Joined(2, "a"), 0);
            long resetAt = -1;
            link.Reset += (state, t) => resetAt = t;
            link.OnResync(Snapshot(9, new Participant("x", Roles.Presenter, "X")), 0);
            Assert.AreEqual(1, link.Resyncs);
            Assert.AreEqual(9, link.State.Seq);
            Assert.AreEqual(9000, resetAt);
            CollectionAssert.AreEqual(new[] { "x" }, link.State.Participants.Keys);
        }

        [Test]
        public void BreaksBackOffFrom100msTo1sAndGiveUpAfter20InARow()
        {
            SessionLink link = Accepted();
            var delays = new List<double>();
            for (int k = 0; k < 20; k++) delays.Add(link.StreamBroken(true, "UNAVAILABLE"));
            Assert.AreEqual(0.1, delays[0], 1e-12);
            Assert.AreEqual(0.2, delays[1], 1e-12);
            Assert.AreEqual(0.8, delays[3], 1e-12);
            Assert.AreEqual(1.0, delays[4], 1e-12, "capped at 1 s");
            Assert.AreEqual(1.0, delays[19], 1e-12);
            Assert.AreEqual(20, link.Reconnects);
            Assert.Throws<SessionGaveUpException>(() => link.StreamBroken(true, "UNAVAILABLE"));
        }

        [Test]
        public void AMessageResetsTheFailuresInARow()
        {
            SessionLink link = Accepted();
            for (int k = 0; k < 15; k++) link.StreamBroken(true, "UNAVAILABLE");
            link.OnAccepted("me", 2000, null, 5.0);
            Assert.AreEqual(0, link.Failures);
            Assert.AreEqual(0.1, link.StreamBroken(true, "UNAVAILABLE"), 1e-12);
        }

        [Test]
        public void AnErrorThatIsNotRetryableEndsTheSession()
        {
            SessionLink link = Accepted();
            var error = Assert.Throws<HoloBridgeException>(() => link.StreamBroken(false, "PERMISSION_DENIED: the token has expired"));
            StringAssert.Contains("token has expired", error.Message);
            Assert.AreEqual(0, link.Reconnects);
        }

        [Test]
        public void HeartbeatsAreSentOnlyWhenTheStreamIsQuietOrThisParticipantIsAway()
        {
            var link = new SessionLink();
            Assert.IsFalse(link.HeartbeatDue(100.0), "not before the first accept");
            link.OnAccepted("me", 2000, Snapshot(1, new Participant("me", Roles.Observer, "Me")), 10.0);
            Assert.IsFalse(link.HeartbeatDue(11.9), "the stream spoke 1.9 s ago");
            Assert.IsTrue(link.HeartbeatDue(12.0), "quiet for a whole interval");
            link.OnEvent(SessionEvent.ForParticipant(EventKinds.Away, 2, 0, "me", "me"), 12.5);
            Assert.IsTrue(link.HeartbeatDue(12.6), "marked away: a heartbeat brings it back");
            link.OnEvent(SessionEvent.ForParticipant(EventKinds.Back, 3, 0, "me", "me"), 13.0);
            Assert.IsFalse(link.HeartbeatDue(13.1));
            Assert.AreEqual(1.6, link.HeartbeatWaitS(0.0), 1e-12);
            Assert.AreEqual(2.0, link.HeartbeatWaitS(1.0), 1e-12);
        }

        [Test]
        public void TheNewestEphemeralValuePerParticipantAndChannelIsKept()
        {
            SessionLink link = Accepted();
            var seen = new List<EphemeralUpdate>();
            link.EphemeralReceived += seen.Add;
            link.OnEphemerals(new[]
            {
                EphemeralUpdate.ForHeadPose("a", 10, Pose.Identity),
                EphemeralUpdate.ForPointer("a", 11, new Ray(Vec3.Zero, new Vec3(0, 0, -1))),
                EphemeralUpdate.ForHeadPose("a", 12, new Pose(new Vec3(0, 1.7, 0), Quat.Identity)),
            }, 0);
            Assert.AreEqual(12, link.Latest("a", Channels.HeadPose).TNs);
            Assert.AreEqual(11, link.Latest("a", Channels.Pointer).TNs);
            Assert.IsNull(link.Latest("b", Channels.HeadPose));
            Assert.AreEqual(3, seen.Count);
        }

        // The shared vectors --------------------------------------------------------------------

        static void Drive(object scenario, string name)
        {
            var link = new SessionLink();
            int step = 0, joins = 0, messages = 0;
            foreach (object s in J.Arr(scenario, "steps"))
            {
                string where = name + ", step " + step++;
                if (J.Has(s, "join"))
                {
                    object join = J.At(s, "join");
                    Assert.AreEqual(J.Str(join, "participant_id"), link.JoinParameters().ParticipantId, where + ": participant id to join with");
                    Assert.AreEqual(J.Long(join, "resume_from_seq"), link.JoinParameters().ResumeFromSeq, where + ": resume_from_seq");
                    joins++;
                    continue;
                }
                if (J.Has(s, "break"))
                {
                    link.StreamBroken(true, J.Str(s, "break"));
                    continue;
                }
                object plain = J.At(s, "plain");
                object expect = J.At(s, "expect");
                string outcome;
                if (J.Has(plain, "accepted"))
                {
                    object a = J.At(plain, "accepted");
                    object snapshot = J.At(a, "snapshot");
                    link.OnAccepted(J.Str(a, "participant_id"), (uint)J.Long(a, "heartbeat_interval_ms"), snapshot == null ? null : Vectors.Snapshot(snapshot), step);
                    outcome = "accepted";
                }
                else if (J.Has(plain, "resync"))
                {
                    link.OnResync(Vectors.Snapshot(J.At(J.At(plain, "resync"), "snapshot")), step);
                    outcome = "resync";
                }
                else
                {
                    var events = new List<SessionEvent>();
                    if (J.Has(plain, "event")) events.Add(Vectors.Event(J.At(plain, "event")));
                    else foreach (object e in J.Arr(plain, "events")) events.Add(Vectors.Event(e));
                    outcome = link.OnEvents(events, step).ToString().ToLowerInvariant();
                }
                messages++;
                Assert.AreEqual(J.Str(expect, "outcome"), outcome, where + ": outcome");
                Assert.AreEqual(J.Long(expect, "seq"), link.State.Seq, where + ": seq");
                Assert.AreEqual(J.Str(expect, "participant_id"), link.ParticipantId, where + ": participant id");
                Assert.AreEqual(J.Num(expect, "heartbeat_interval_s"), link.HeartbeatIntervalS, where + ": heartbeat interval");
                Assert.AreEqual(J.Long(expect, "resyncs"), link.Resyncs, where + ": resyncs");
            }
            Assert.Greater(joins, 0, name + ": joins");
            Assert.Greater(messages, 3, name + ": messages");
            Vectors.AssertState(J.At(scenario, "expected"), link.State, J.At(scenario, "expected_order"), name + ", final state");
        }

        [Test]
        public void SharedVectorsTheRecordedStreamsWithTwoResumes()
        {
            object recorded = J.At(Vectors.Load("session_stream.json"), "recorded");
            Drive(recorded, "recorded");
            int joins = 0, snapshots = 0;
            foreach (object s in J.Arr(recorded, "steps"))
            {
                if (J.Has(s, "join")) joins++;
                if (J.Has(s, "plain") && J.Has(J.At(s, "plain"), "accepted") && J.At(J.At(J.At(s, "plain"), "accepted"), "snapshot") != null) snapshots++;
            }
            Assert.AreEqual(3, joins, "a first join and two resumes");
            Assert.AreEqual(2, snapshots, "the first join's and the one past the backlog");
        }

        [Test]
        public void SharedVectorsStreamsWithFaults()
        {
            List<object> perturbed = J.Arr(Vectors.Load("session_stream.json"), "perturbed");
            var names = new List<string>();
            foreach (object scenario in perturbed)
            {
                names.Add(J.Str(scenario, "name"));
                Drive(scenario, J.Str(scenario, "name"));
            }
            CollectionAssert.AreEqual(new[] { "repeat", "gap", "resync", "batch-gap" }, names);
        }

        [Test]
        public void SharedVectorsTheBackOffIsTheSdks()
        {
            object retry = J.At(Vectors.Load("session_stream.json"), "retry");
            Assert.AreEqual(J.Long(retry, "attempts"), RetryPolicy.Session.Attempts);
            foreach (object pair in J.Arr(retry, "delays_s"))
            {
                int failures = (int)J.Long(J.Arr(pair)[0]);
                Assert.AreEqual(J.Num(J.Arr(pair)[1]), RetryPolicy.Session.DelayS(failures), 0.0, "after " + failures + " failures");
            }
        }
    }
}
